<?php
// The backend of tests/it/hooks.rs: a real hook receiver on PHP's built-in
// server, using the PHP class (CometBox\Hooks) the way a backend would.
//
// Environment: HOOK_SECRET (the shared secret), HOOK_DIR (a directory the
// test owns). Behaviour, read from $HOOK_DIR/mode at every request:
//   ok       answer (the default)
//   fail     500 for everything (after checking the signature)
//   slow     sleep 3 s, then answer
//   garbage  200 with a body that is not an answer
//   reject:<prefix>       400 for notifications about clients whose id
//                         starts with <prefix> (a permanent refusal), 200
//                         for everything else
//   unavailable:<prefix>  503 for those (a passing failure), 200 for the rest
// Rules when answering: connect of a client whose id starts with "banned",
// or whose Bayeux handshake ext says {"user": "banned"}, is denied
// ("banned user"); subscribe to "forbidden" is denied
// ("forbidden room"); publish of data containing "badword" is denied, of
// "replace-me" is allowed with "replaced".
// Every verified request is logged as one JSON line in $HOOK_DIR/events.log
// with the status it got; failed verifications go to rejected.log.

declare(strict_types=1);

require getenv('COMETBOX_PHP_CLIENT') . '/autoload.php';

use CometBox\Exception\SignatureError;
use CometBox\Hooks;

$dir = (string) getenv('HOOK_DIR');
$mode = trim((string) @file_get_contents("$dir/mode")) ?: 'ok';
$body = (string) file_get_contents('php://input');

function logLine(string $file, array $line): void
{
    file_put_contents($file, json_encode($line) . "\n", FILE_APPEND | LOCK_EX);
}

try {
    $event = Hooks::verify($body, $_SERVER['HTTP_COMETBOX_SIGNATURE'] ?? null, (string) getenv('HOOK_SECRET'));
} catch (SignatureError $e) {
    logLine("$dir/rejected.log", ['code' => $e->getErrorCode()]);
    http_response_code($e->getHttpStatus());
    exit;
}

if ($mode === 'slow') {
    sleep(3);
}
$status = $mode === 'fail' ? 500 : 200;
$notification = in_array($event['type'], ['online', 'offline', 'subscribed', 'unsubscribed'], true);
foreach (['reject' => 400, 'unavailable' => 503] as $refusal => $code) {
    $prefix = substr($mode, strlen($refusal) + 1);
    if (strncmp($mode, "$refusal:", strlen($refusal) + 1) === 0 && $notification
        && strncmp($event['client'], $prefix, strlen($prefix)) === 0) {
        $status = $code;
    }
}
logLine("$dir/events.log", ['status' => $status, 'event' => $event]);
http_response_code($status);
header('Content-Type: application/json');
if ($status !== 200) {
    echo '{"error":"refused"}';
    exit;
}
if ($mode === 'garbage') {
    echo 'this is not JSON';
    exit;
}
switch ($event['type']) {
    case 'connect':
        $banned = strncmp($event['client'], 'banned', 6) === 0 || ($event['ext']['user'] ?? '') === 'banned';
        echo $banned ? Hooks::deny('banned user') : Hooks::allow();
        break;
    case 'subscribe':
        echo $event['channel'] === 'forbidden' ? Hooks::deny('forbidden room') : Hooks::allow();
        break;
    case 'publish':
        $text = json_encode($event['data'] ?? null);
        if (strpos($text, 'badword') !== false) {
            echo Hooks::deny('watch your language');
        } elseif (($event['data'] ?? null) === 'replace-me') {
            echo Hooks::allowWith('replaced');
        } else {
            echo Hooks::allow();
        }
        break;
    default:
        echo Hooks::allow();
}
