<?php

declare(strict_types=1);

namespace CometBox\Transport;

use CometBox\Exception\Unavailable;

/**
 * HTTP/1.1 written and read by hand over stream_socket_client(): TCP, TLS
 * (https://) or a Unix socket. Needs no extension. One connection per
 * request (`Connection: close`).
 *
 * The connect timeout bounds the connection; the timeout bounds the whole
 * request (connect, send and read together).
 */
final class SocketTransport implements Transport
{
    /** Bodies over this many bytes are sent with `Expect: 100-continue`. */
    public const EXPECT_CONTINUE_ABOVE = 65536;

    /** Seconds to wait for `100 Continue` before sending the body anyway. */
    private const EXPECT_CONTINUE_WAIT = 1.0;

    /** @var Endpoint */
    private $endpoint;

    /** @var float */
    private $connectTimeout;

    /** @var float */
    private $timeout;

    /** @var string */
    private $userAgent;

    public function __construct(Endpoint $endpoint, float $connectTimeout, float $timeout, string $userAgent)
    {
        $this->endpoint = $endpoint;
        $this->connectTimeout = $connectTimeout;
        $this->timeout = $timeout;
        $this->userAgent = $userAgent;
    }

    public function name(): string
    {
        return 'socket';
    }

    public function request(string $method, string $path, array $headers, ?string $body): Response
    {
        $start = microtime(true);
        $deadline = $start + $this->timeout;
        $e = $this->endpoint;
        if ($e->isUnix()) {
            $remote = 'unix://' . $e->socketPath;
        } else {
            $host = strpos($e->host, ':') !== false ? '[' . $e->host . ']' : $e->host;
            $remote = ($e->scheme === 'https' ? 'tls://' : 'tcp://') . $host . ':' . $e->port;
        }

        $errno = 0;
        $errstr = '';
        $warning = null;
        set_error_handler(static function (int $no, string $str) use (&$warning): bool {
            $warning = $str;
            return true;
        });
        try {
            $context = stream_context_create($e->scheme === 'https' ? ['ssl' => ['peer_name' => $e->host]] : []);
            $fp = stream_socket_client(
                $remote,
                $errno,
                $errstr,
                min($this->connectTimeout, $this->timeout),
                STREAM_CLIENT_CONNECT,
                $context
            );
        } finally {
            restore_error_handler();
        }
        if ($fp === false) {
            $why = $errstr !== '' ? $errstr : ($warning ?? 'unknown error');
            throw new Unavailable(
                sprintf('cannot connect to cometbox at %s: %s', $e->describe(), $why),
                'connection-failed'
            );
        }

        try {
            $head = sprintf("%s %s HTTP/1.1\r\n", $method, $e->target($path));
            $all = [
                'Host' => $e->hostHeader(),
                'User-Agent' => $this->userAgent,
                'Connection' => 'close',
            ] + $headers;
            if ($body !== null || $method === 'POST') {
                $all['Content-Length'] = (string) strlen((string) $body);
            }
            $expect = $body !== null && strlen($body) > self::EXPECT_CONTINUE_ABOVE;
            if ($expect) {
                $all['Expect'] = '100-continue';
            }
            foreach ($all as $name => $value) {
                $head .= $name . ': ' . $value . "\r\n";
            }
            $early = '';
            if ($expect) {
                // Send the head alone and give the server a moment to refuse
                // the body (413) before it is sent.
                $this->writeAll($fp, $head . "\r\n", $deadline);
                $early = $this->awaitContinue($fp, $deadline);
                if ($early === null) {
                    $this->writeAll($fp, (string) $body, $deadline);
                    $early = '';
                }
            } else {
                $this->writeAll($fp, $head . "\r\n" . (string) $body, $deadline);
            }
            return $this->readResponse($fp, $method === 'HEAD', $deadline, $early);
        } finally {
            fclose($fp);
        }
    }

    /**
     * Sends the request without blocking, watching for a reply at the same
     * time: a server may answer before it has read the whole body (413 for
     * a declared length over its limit) and close the connection. Then the
     * rest of the body is not sent and the reply is read.
     *
     * @param resource $fp
     */
    private function writeAll($fp, string $data, float $deadline): void
    {
        $offset = 0;
        $length = strlen($data);
        stream_set_blocking($fp, false);
        try {
            while ($offset < $length) {
                $left = $deadline - microtime(true);
                if ($left <= 0) {
                    throw $this->timeoutError();
                }
                $read = [$fp];
                $write = [$fp];
                $except = null;
                $sec = (int) floor($left);
                $ready = @stream_select($read, $write, $except, $sec, (int) (($left - $sec) * 1e6));
                if ($ready === false) {
                    throw $this->lostWhileSending();
                }
                if ($read !== []) {
                    return; // an early reply (or the peer closed): go read it
                }
                if ($write === []) {
                    continue;
                }
                $written = @fwrite($fp, substr($data, $offset, 65536));
                if ($written === false) {
                    return; // broken pipe: a reply may still be there to read
                }
                $offset += $written;
            }
        } finally {
            stream_set_blocking($fp, true);
        }
    }

    /**
     * After a head sent with `Expect: 100-continue`: returns null when the
     * body should be sent (a 100 Continue came, or nothing within
     * EXPECT_CONTINUE_WAIT seconds, as RFC 9110 allows), or the bytes of the
     * final reply the server sent instead (then the body is not sent).
     *
     * @param resource $fp
     */
    private function awaitContinue($fp, float $deadline): ?string
    {
        $until = min($deadline, microtime(true) + self::EXPECT_CONTINUE_WAIT);
        $received = '';
        while (true) {
            $left = $until - microtime(true);
            if ($left <= 0) {
                return $received === '' ? null : $received;
            }
            $read = [$fp];
            $write = $except = null;
            $sec = (int) floor($left);
            $ready = @stream_select($read, $write, $except, $sec, (int) (($left - $sec) * 1e6));
            if ($ready === false) {
                throw $this->lostWhileSending();
            }
            if ($ready === 0) {
                continue;
            }
            $chunk = @fread($fp, 8192);
            if ($chunk === false || $chunk === '') {
                return $received; // closed: whatever came is the reply (or nothing)
            }
            $received .= $chunk;
            $end = strpos($received, "\r\n\r\n");
            if ($end !== false) {
                if (preg_match('#^HTTP/\d(?:\.\d)? +100\b#', $received)) {
                    // Anything after the 100 head belongs to the final reply,
                    // which a server cannot send before it has the body.
                    return null;
                }
                return $received;
            }
        }
    }

    private function lostWhileSending(): Unavailable
    {
        return new Unavailable(
            sprintf('connection to cometbox at %s lost while sending the request', $this->endpoint->describe()),
            'connection-lost'
        );
    }

    /**
     * @param resource $fp
     */
    private function readResponse($fp, bool $headRequest, float $deadline, string $already = ''): Response
    {
        $parser = new HttpResponseParser($headRequest);
        try {
            if ($already !== '' && $parser->push($already)) {
                return $parser->response();
            }
            while (true) {
                $this->setTimeout($fp, $deadline);
                $chunk = @fread($fp, 65536);
                if ($chunk === false || $chunk === '') {
                    if (stream_get_meta_data($fp)['timed_out']) {
                        throw $this->timeoutError();
                    }
                    if (feof($fp)) {
                        if ($parser->finish()) {
                            return $parser->response();
                        }
                        throw new Unavailable(
                            sprintf('cometbox at %s closed the connection before a complete reply', $this->endpoint->describe()),
                            'connection-lost'
                        );
                    }
                    if (microtime(true) >= $deadline) {
                        throw $this->timeoutError();
                    }
                    continue;
                }
                if ($parser->push($chunk)) {
                    return $parser->response();
                }
            }
        } catch (\UnexpectedValueException $ex) {
            throw new Unavailable(
                sprintf('invalid HTTP reply from %s: %s', $this->endpoint->describe(), $ex->getMessage()),
                'connection-lost',
                0,
                [],
                $ex
            );
        }
    }

    /**
     * @param resource $fp
     */
    private function setTimeout($fp, float $deadline): void
    {
        $left = $deadline - microtime(true);
        if ($left <= 0) {
            throw $this->timeoutError();
        }
        $sec = (int) floor($left);
        $usec = (int) (($left - $sec) * 1e6);
        stream_set_timeout($fp, $sec, max($usec, $sec === 0 ? 1000 : 0));
    }

    private function timeoutError(): Unavailable
    {
        return new Unavailable(
            sprintf('no complete reply from cometbox at %s within %.3g s', $this->endpoint->describe(), $this->timeout),
            'timeout'
        );
    }
}
