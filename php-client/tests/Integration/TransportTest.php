<?php

declare(strict_types=1);

namespace CometBox\Tests\Integration;

use CometBox\Client;
use CometBox\Exception\CometBoxException;
use CometBox\Exception\RequestRejected;
use CometBox\Exception\Unavailable;
use CometBox\Tests\Support\FakeServer;
use PHPUnit\Framework\TestCase;

/**
 * Each transport against a scripted local HTTP server (tests/Support/
 * fake-server.php): what goes on the wire, and the reply framings the real
 * server may or may not use (Content-Length, chunked, close-delimited).
 */
final class TransportTest extends TestCase
{
    public static function transports(): array
    {
        $cases = [];
        foreach (['socket', 'curl', 'stream'] as $t) {
            $cases["$t tcp"] = [$t, false];
        }
        foreach (['socket', 'curl'] as $t) {
            $cases["$t unix"] = [$t, true];
        }
        if (extension_loaded('cometbox')) {
            $cases['native tcp'] = ['native', false];
            $cases['native unix'] = ['native', true];
        }
        return $cases;
    }

    private function requireTransport(string $transport): void
    {
        if ($transport === 'curl' && !extension_loaded('curl')) {
            $this->markTestSkipped('ext-curl is not loaded in this run');
        }
    }

    /** @dataProvider transports */
    public function testWireFormatAndFramings(string $transport, bool $unix): void
    {
        $this->requireTransport($transport);
        $ok = '<ok accepted="2"/>';
        $server = new FakeServer([
            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: " . strlen($ok) . "\r\n\r\n$ok",
            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n"
                . "4\r\n<ok \r\n" . dechex(strlen($ok) - 4) . "\r\n" . substr($ok, 4) . "\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nConnection: close\r\n\r\n$ok",
        ], $unix);
        try {
            $client = new Client($server->url, ['transport' => $transport, 'key' => 'the-key', 'timeout' => 5]);
            $this->assertSame($transport, $client->transportName());
            for ($i = 0; $i < 3; $i++) {
                if ($transport === 'native' && $i > 0) {
                    // The fake server closes after each reply. The extension
                    // resends nothing it has written, so a request racing
                    // that close would be reported (connection-lost); once
                    // the close has arrived, it is seen before sending and
                    // a new connection is opened.
                    usleep(50000);
                }
                $this->assertSame(2, $client->batch()->send('alice', ['n' => $i])->disconnect('bob')->commit());
            }
            $requests = $server->requests();
            $this->assertCount(3, $requests);
            foreach ($requests as $raw) {
                [$head, $body] = explode("\r\n\r\n", $raw, 2);
                $lines = explode("\r\n", $head);
                $this->assertSame('POST / HTTP/1.1', $lines[0]);
                $headers = [];
                foreach (array_slice($lines, 1) as $line) {
                    [$name, $value] = array_map('trim', explode(':', $line, 2));
                    $headers[strtolower($name)] = $value;
                }
                $this->assertSame('Bearer the-key', $headers['authorization']);
                $this->assertSame('application/xml', $headers['content-type']);
                $this->assertSame((string) strlen($body), $headers['content-length']);
                if ($transport === 'native') {
                    $this->assertArrayNotHasKey('connection', $headers, 'the extension keeps its connection');
                } else {
                    $this->assertSame('close', strtolower($headers['connection']));
                }
                $this->assertArrayHasKey('host', $headers);
                $this->assertStringStartsWith('cometbox-php/', $headers['user-agent']);
                $this->assertArrayNotHasKey('expect', $headers);
                $this->assertStringContainsString('<batch><message to="alice">{&quot;n&quot;:', $body);
            }
        } finally {
            $server->stop();
        }
    }

    /** @dataProvider transports */
    public function testChunkedErrorReply(string $transport, bool $unix): void
    {
        $this->requireTransport($transport);
        $error = '<error code="invalid-json" line="3">message 2: expected value</error>';
        $server = new FakeServer([
            "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n" . dechex(strlen($error)) . "\r\n$error\r\n0\r\n\r\n",
        ], $unix);
        try {
            $client = new Client($server->url, ['transport' => $transport, 'timeout' => 5]);
            $client->send('a', 1);
            $this->fail('no exception');
        } catch (RequestRejected $e) {
            $this->assertSame('invalid-json', $e->getErrorCode());
            $this->assertSame(3, $e->getErrorLine());
            $this->assertSame(400, $e->getHttpStatus());
        } finally {
            $server->stop();
        }
    }

    /** @dataProvider transports */
    public function testRetriesAfter503(string $transport, bool $unix): void
    {
        $this->requireTransport($transport);
        $busy = '<error code="overloaded">busy</error>';
        $ok = '<ok accepted="1"/>';
        $server = new FakeServer([
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: " . strlen($busy) . "\r\n\r\n$busy",
            "HTTP/1.1 200 OK\r\nContent-Length: " . strlen($ok) . "\r\n\r\n$ok",
        ], $unix);
        try {
            $client = new Client($server->url, ['transport' => $transport, 'timeout' => 5, 'retries' => 1, 'retry_delay' => 0.01]);
            $this->assertSame(1, $client->send('a', 1));
            $this->assertCount(2, $server->requests());
        } finally {
            $server->stop();
        }
    }

    /** @dataProvider transports */
    public function testUnansweredRequestTimesOut(string $transport, bool $unix): void
    {
        $this->requireTransport($transport);
        $server = new FakeServer(['-'], $unix);
        try {
            $client = new Client($server->url, ['transport' => $transport, 'timeout' => 0.8]);
            $start = microtime(true);
            try {
                $client->send('a', 1);
                $this->fail('no exception');
            } catch (Unavailable $e) {
                $elapsed = microtime(true) - $start;
                $this->assertSame('timeout', $e->getErrorCode(), $e->getMessage());
                $this->assertFalse($e->isSafeToRetry());
                $this->assertGreaterThanOrEqual(0.7, $elapsed);
                $this->assertLessThan(0.8 + 0.7, $elapsed, "took $elapsed s with timeout 0.8 s");
            }
        } finally {
            $server->stop();
        }
    }

    /**
     * A server that accepts the connection, reads the request and closes
     * without a word may have applied it: that is not `connection-failed`, so
     * it is not retried (the second, successful reply is never asked for).
     *
     * @dataProvider transports
     */
    public function testConnectionClosedAfterConnectIsNotConnectionFailed(string $transport, bool $unix): void
    {
        $this->requireTransport($transport);
        $ok = '<ok accepted="1"/>';
        $server = new FakeServer(['', "HTTP/1.1 200 OK\r\nContent-Length: " . strlen($ok) . "\r\n\r\n$ok"], $unix);
        try {
            $client = new Client($server->url, ['transport' => $transport, 'timeout' => 5, 'retries' => 2, 'retry_delay' => 0.01]);
            try {
                $client->send('a', 1);
                $this->fail('no exception: the request was retried after the server closed the connection');
            } catch (Unavailable $e) {
                $this->assertNotSame('connection-failed', $e->getErrorCode(), $e->getMessage());
                $this->assertSame('connection-lost', $e->getErrorCode(), $e->getMessage());
                $this->assertFalse($e->isSafeToRetry());
            }
            $this->assertCount(1, $server->requests());
        } finally {
            $server->stop();
        }
    }

    /** @dataProvider transports */
    public function testServerDownIsUnavailableWithinTheTimeout(string $transport, bool $unix): void
    {
        $this->requireTransport($transport);
        if ($unix) {
            $url = 'unix://' . sys_get_temp_dir() . '/cbphp-nothing-' . getmypid() . '.sock';
        } else {
            // A port that was free a moment ago.
            $s = stream_socket_server('tcp://127.0.0.1:0');
            $name = stream_socket_get_name($s, false);
            fclose($s);
            $url = 'http://' . $name;
        }
        $client = new Client($url, ['transport' => $transport, 'timeout' => 1.0]);
        foreach (['send' => function () use ($client) {
            $client->send('a', 1);
        }, 'stats' => function () use ($client) {
            $client->stats();
        }, 'presence' => function () use ($client) {
            $client->presence('a');
        }] as $what => $call) {
            $start = microtime(true);
            try {
                $call();
                $this->fail("$what: no exception");
            } catch (Unavailable $e) {
                $elapsed = microtime(true) - $start;
                $this->assertSame('connection-failed', $e->getErrorCode(), $e->getMessage());
                $this->assertTrue($e->isSafeToRetry());
                $this->assertSame(0, $e->getHttpStatus());
                $this->assertLessThan(1.0, $elapsed, "$what took $elapsed s");
            }
        }
        $this->assertFalse($client->health());

        // With retries, each attempt is made and the last error thrown.
        $client = new Client($url, ['transport' => $transport, 'timeout' => 1.0, 'retries' => 2, 'retry_delay' => 0.05]);
        $start = microtime(true);
        try {
            $client->send('a', 1);
            $this->fail('no exception');
        } catch (Unavailable $e) {
            $elapsed = microtime(true) - $start;
            $this->assertGreaterThanOrEqual(0.15, $elapsed); // 0.05 + 0.10 of backoff
            $this->assertLessThan(2.0, $elapsed);
        }
    }

    /** @dataProvider transports */
    public function testGarbageReplyIsAnError(string $transport, bool $unix): void
    {
        $this->requireTransport($transport);
        $server = new FakeServer(["HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"], $unix);
        try {
            $client = new Client($server->url, ['transport' => $transport, 'timeout' => 5]);
            $client->send('a', 1);
            $this->fail('no exception');
        } catch (CometBoxException $e) {
            $this->assertSame('unexpected-response', $e->getErrorCode());
        } finally {
            $server->stop();
        }
    }
}
