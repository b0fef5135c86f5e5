<?php

/**
 * Checks the FPM test's outcome: every acknowledged number (HTTP 200 from
 * the page) is in its mailbox exactly once, no number is there twice, the
 * page took the expected path, and each FPM worker opened at most one
 * ingest connection per server lifetime (RESTARTS + 1), and every request
 * numbered from MUST_SUCCEED_FROM on (those sent once the restarted server
 * was back) was acknowledged.
 *
 *   php check.php RESULTS_FILE PUBLIC_ADDR SECRET WORKERS RESTARTS EXPECT_TRANSPORT [MUST_SUCCEED_FROM]
 *
 * Prints a summary line; exits 1 with the reasons when anything is wrong.
 */

declare(strict_types=1);

require dirname(__DIR__, 2) . '/php-client/autoload.php';

[$self, $resultsFile, $public, $secret, $workers, $restarts, $expectTransport] = $argv;
$workers = (int) $workers;
$restarts = (int) $restarts;
$mustSucceedFrom = isset($argv[7]) ? (int) $argv[7] : PHP_INT_MAX;
$problems = [];

$acked = [];
$failed = [];
$perPid = [];
foreach (file($resultsFile, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) as $line) {
    $r = json_decode($line, true);
    $body = json_decode($r['body'], true);
    if ($r['status'] === 200 && is_array($body) && ($body['n'] ?? null) === $r['n']) {
        $acked[$r['n']] = true;
        if ($body['transport'] !== $expectTransport) {
            $problems[] = "request {$r['n']} used transport {$body['transport']}, expected $expectTransport";
        }
        if (is_array($body['native'])) {
            $pid = $body['native']['pid'];
            $perPid[$pid] = max($perPid[$pid] ?? 0, $body['native']['connects']);
        }
    } else {
        $failed[$r['n']] = $r['status'] . ' ' . substr($r['body'], 0, 200);
    }
}

// Everything the ten mailboxes hold, from the start (timeout=0: no wait).
$seen = [];
for ($m = 0; $m < 10; $m++) {
    $token = CometBox\Jwt::mint($secret, "fpm-$m", 300, []);
    $since = null;
    for ($page = 0; $page < 50; $page++) {
        $query = ['token' => $token, 'timeout' => '0'] + ($since === null ? [] : ['since' => $since]);
        $json = file_get_contents("http://$public/poll?" . http_build_query($query));
        $reply = json_decode((string) $json, true);
        if (!is_array($reply) || !isset($reply['messages'])) {
            $problems[] = "poll of fpm-$m failed: " . substr((string) $json, 0, 200);
            break;
        }
        if (!empty($reply['reset']) && $since !== null) {
            $problems[] = "poll of fpm-$m was reset (messages dropped)";
        }
        if ($reply['messages'] === []) {
            break;
        }
        foreach ($reply['messages'] as $msg) {
            $seen[$msg['data']] = ($seen[$msg['data']] ?? 0) + 1;
        }
        $since = $reply['cursor'];
    }
}

$lost = array_keys(array_diff_key($acked, $seen));
$doubled = array_keys(array_filter($seen, static function (int $c): bool {
    return $c > 1;
}));
if ($lost !== []) {
    $problems[] = count($lost) . ' acknowledged sends missing, e.g. ' . implode(',', array_slice($lost, 0, 10));
}
if ($doubled !== []) {
    $problems[] = count($doubled) . ' numbers delivered more than once, e.g. ' . implode(',', array_slice($doubled, 0, 10));
}
$unackedThere = count(array_intersect_key($failed, $seen));
if ($expectTransport === 'native') {
    if (count($perPid) !== $workers) {
        $problems[] = 'answers came from ' . count($perPid) . " workers, expected $workers";
    }
    foreach ($perPid as $pid => $connects) {
        if ($connects > $restarts + 1) {
            $problems[] = "worker $pid opened $connects ingest connections (at most " . ($restarts + 1) . ' expected)';
        }
    }
}
$failedAfter = array_filter(array_keys($failed), static function (int $n) use ($mustSucceedFrom): bool {
    return $n >= $mustSucceedFrom;
});
if ($failedAfter !== []) {
    $first = min($failedAfter);
    $problems[] = count($failedAfter) . " requests failed once the server was back, e.g. $first: {$failed[$first]}";
}
if (count($acked) === 0) {
    $problems[] = 'no request was acknowledged';
}
printf(
    "requests %d, acknowledged %d, failed %d (of which %d applied anyway), delivered %d, lost 0 expected: %d, doubled: %d, workers %d, connections per worker %s\n",
    count($acked) + count($failed),
    count($acked),
    count($failed),
    $unackedThere,
    count($seen),
    count($lost),
    count($doubled),
    count($perPid),
    json_encode(array_values($perPid))
);
foreach (array_slice($failed, 0, 5, true) as $n => $why) {
    echo "  failed $n: $why\n";
}
if ($problems !== []) {
    fwrite(STDERR, "FPM check FAILED:\n  " . implode("\n  ", $problems) . "\n");
    exit(1);
}
