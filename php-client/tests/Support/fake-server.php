<?php

/**
 * A scripted HTTP server for transport tests, run as its own process:
 *
 *   php fake-server.php LISTEN READY_FILE LOG_FILE REPLY_FILE...
 *
 * LISTEN is tcp://127.0.0.1:0 or unix:///path. It writes its address to
 * READY_FILE, then answers one connection per REPLY_FILE, in order: reads the
 * request head and its Content-Length body, appends the raw request to
 * LOG_FILE (separated by "\n=====\n"), writes the reply file's bytes in small
 * pieces with short pauses (to exercise incremental parsing), closes. A reply
 * file named "-" means: read the request, then keep the connection open
 * without answering until the client goes away. Exits when done, or after
 * 20 seconds whatever happens.
 */

declare(strict_types=1);

[$self, $listen, $readyFile, $logFile] = array_slice($argv, 0, 4);
$replies = array_slice($argv, 4);
$deadline = microtime(true) + 20.0;

$server = stream_socket_server($listen, $errno, $errstr);
if ($server === false) {
    fwrite(STDERR, "fake-server: cannot listen on $listen: $errstr\n");
    exit(1);
}
$name = stream_socket_get_name($server, false);
$address = strncmp($listen, 'unix:', 5) === 0 ? $listen : 'http://' . $name;
file_put_contents($readyFile . '.tmp', $address);
rename($readyFile . '.tmp', $readyFile);

foreach ($replies as $replyFile) {
    $left = $deadline - microtime(true);
    if ($left <= 0) {
        break;
    }
    $conn = @stream_socket_accept($server, $left);
    if ($conn === false) {
        break;
    }
    stream_set_timeout($conn, 5);
    $request = '';
    while (strpos($request, "\r\n\r\n") === false && !feof($conn) && microtime(true) < $deadline) {
        $chunk = fread($conn, 8192);
        if ($chunk === false || $chunk === '') {
            if (stream_get_meta_data($conn)['timed_out']) {
                break;
            }
            continue;
        }
        $request .= $chunk;
    }
    $headEnd = strpos($request, "\r\n\r\n");
    if ($headEnd !== false && preg_match('/\r\ncontent-length:\s*(\d+)/i', substr($request, 0, $headEnd), $m)) {
        $want = $headEnd + 4 + (int) $m[1];
        while (strlen($request) < $want && !feof($conn) && microtime(true) < $deadline) {
            $chunk = fread($conn, 8192);
            if ($chunk === false || $chunk === '') {
                if (stream_get_meta_data($conn)['timed_out']) {
                    break;
                }
                continue;
            }
            $request .= $chunk;
        }
    }
    file_put_contents($logFile, $request . "\n=====\n", FILE_APPEND);
    if ($replyFile === '-') {
        // Hold the connection without answering until the peer closes it.
        stream_set_timeout($conn, 1);
        while (!feof($conn) && microtime(true) < $deadline) {
            fread($conn, 8192);
        }
        fclose($conn);
        continue;
    }
    $reply = (string) file_get_contents($replyFile);
    foreach (str_split($reply, 7) as $i => $piece) {
        if ($i > 0) {
            usleep(2000);
        }
        @fwrite($conn, $piece);
        fflush($conn);
    }
    // Closed right after the last byte (no pause): a keep-alive client
    // (the native transport) sees the close before its next request.
    fclose($conn);
}
fclose($server);
if (strncmp($listen, 'unix://', 7) === 0) {
    @unlink(substr($listen, 7));
}
