<?php

/**
 * The FPM test's page (php-ext/tests/fpm-test.sh): sends message number
 * ?n= to mailbox fpm-(n mod 10) through php-client, which uses the cometbox
 * extension when the pool loads it. Answers 200 with JSON (the worker's pid,
 * the transport, the extension's counters) when the send was acknowledged,
 * 503 with the error code otherwise. Where things are comes from
 * page-config.php, written by the test next to this file's copy.
 */

declare(strict_types=1);

$config = require __DIR__ . '/page-config.php';
require $config['autoload'];

header('Content-Type: application/json');
$n = (int) ($_GET['n'] ?? -1);
try {
    $client = new CometBox\Client($config['ingest'], ['key' => $config['key'], 'timeout' => 2.0]);
    $client->send('fpm-' . ($n % 10), $n);
    echo json_encode([
        'n' => $n,
        'pid' => getmypid(),
        'transport' => $client->transportName(),
        'native' => function_exists('cometbox_native_stats') ? cometbox_native_stats() : null,
    ]);
} catch (CometBox\Exception\CometBoxException $e) {
    http_response_code(503);
    echo json_encode(['n' => $n, 'error' => $e->getErrorCode(), 'message' => $e->getMessage()]);
}
