<?php

/**
 * For NativeExtensionTest: a server that keeps the connection, answers the
 * first request (keep-alive) and, on the same connection, reads the second
 * and closes without replying. What the extension must then report, not
 * resend. Run as its own process:
 *
 *   php drop-second-server.php SOCKET_PATH READY_FILE LOG_FILE
 *
 * Logs one line per request received; exits after that connection (or 10 s).
 */

declare(strict_types=1);

[$self, $socket, $readyFile, $logFile] = $argv;
$ok = '<ok accepted="1"/>';
@unlink($socket);
$server = stream_socket_server("unix://$socket", $errno, $errstr);
if ($server === false) {
    fwrite(STDERR, "cannot listen on $socket: $errstr\n");
    exit(1);
}
touch($readyFile);
$conn = @stream_socket_accept($server, 10);
$deadline = microtime(true) + 10;
$seen = 0;
$buf = '';
while ($conn && $seen < 2 && !feof($conn) && microtime(true) < $deadline) {
    $chunk = fread($conn, 8192);
    if ($chunk === false || $chunk === '') {
        continue;
    }
    $buf .= $chunk;
    // Requests are small XML documents: one ends with its closing tag.
    while (($end = strpos($buf, '</message>')) !== false) {
        $buf = substr($buf, $end + 10);
        $seen++;
        file_put_contents($logFile, "request\n", FILE_APPEND);
        if ($seen === 1) {
            fwrite($conn, "HTTP/1.1 200 OK\r\nContent-Length: " . strlen($ok) . "\r\n\r\n$ok");
        }
    }
}
if ($conn) {
    fclose($conn);
}
fclose($server);
@unlink($socket);
