<?php

/**
 * Drives the FPM test's page: requests ?n=FIRST..FIRST+N-1 with C in flight
 * (curl_multi) on http://127.0.0.1:PORT/, within a time bound, writing the
 * count done to PROGRESS_FILE as it goes and, at the end, appending one JSON
 * line per request to RESULTS_FILE ({"n", "status", "body"}).
 *
 *   php drive.php PORT N C MAX_SECONDS PROGRESS_FILE RESULTS_FILE [FIRST]
 */

declare(strict_types=1);

[$self, $port, $total, $parallel, $maxSeconds, $progressFile, $resultsFile] = $argv;
$first = (int) ($argv[7] ?? 0);
$total = (int) $total;
$parallel = (int) $parallel;
$deadline = microtime(true) + (float) $maxSeconds;

$multi = curl_multi_init();
$next = 0;
$done = 0;
$results = [];
$add = static function (int $i) use ($multi, $port, $first): void {
    $n = $first + $i;
    $h = curl_init("http://127.0.0.1:$port/?n=$n");
    curl_setopt_array($h, [CURLOPT_RETURNTRANSFER => true, CURLOPT_TIMEOUT => 10, CURLOPT_PRIVATE => (string) $n, CURLOPT_NOPROXY => '*']);
    curl_multi_add_handle($multi, $h);
};
while ($next < min($parallel, $total)) {
    $add($next++);
}
while ($done < $total && microtime(true) < $deadline) {
    curl_multi_exec($multi, $running);
    curl_multi_select($multi, 0.2);
    while ($info = curl_multi_info_read($multi)) {
        $h = $info['handle'];
        $n = (int) curl_getinfo($h, CURLINFO_PRIVATE);
        $results[] = ['n' => $n, 'status' => (int) curl_getinfo($h, CURLINFO_RESPONSE_CODE), 'body' => (string) curl_multi_getcontent($h)];
        curl_multi_remove_handle($multi, $h);
        curl_close($h);
        $done++;
        if ($next < $total) {
            $add($next++);
        }
        if ($done % 100 === 0) {
            file_put_contents($progressFile, (string) $done);
        }
    }
}
file_put_contents($progressFile, (string) $done);
$lines = '';
foreach ($results as $r) {
    $lines .= json_encode($r) . "\n";
}
file_put_contents($resultsFile, $lines, FILE_APPEND);
exit($done === $total ? 0 : 1);
