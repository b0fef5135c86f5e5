<?php

declare(strict_types=1);

namespace CometBox\Tests\Unit;

use CometBox\Client;
use CometBox\Exception\CometBoxException;
use CometBox\Exception\InvalidArgument;
use CometBox\Exception\RequestRejected;
use CometBox\Exception\Unauthorized;
use CometBox\Exception\Unavailable;
use CometBox\Transport\Endpoint;
use CometBox\Transport\Response;
use CometBox\Transport\Transport;
use PHPUnit\Framework\TestCase;

/** A transport that answers from a script and records the requests. */
final class ScriptedTransport implements Transport
{
    /** @var list<Response|\Throwable> */
    public $script;

    /** @var list<array{0: string, 1: string, 2: array<string, string>, 3: string|null}> */
    public $requests = [];

    public function __construct(array $script)
    {
        $this->script = $script;
    }

    public function request(string $method, string $path, array $headers, ?string $body): Response
    {
        $this->requests[] = [$method, $path, $headers, $body];
        $next = array_shift($this->script);
        if ($next === null) {
            throw new \LogicException('unexpected request');
        }
        if ($next instanceof \Throwable) {
            throw $next;
        }
        return $next;
    }

    public function name(): string
    {
        return 'scripted';
    }
}

final class ClientTest extends TestCase
{
    public function testAutoPicksNativeThenCurlThenSocket(): void
    {
        $tcp = Endpoint::parse('http://127.0.0.1:8481');
        $unix = Endpoint::parse('unix:///run/cometbox/ingest.sock');
        $tls = Endpoint::parse('https://127.0.0.1:8481');
        $this->assertSame('curl', Client::selectTransport('auto', $tcp, true, false));
        $this->assertSame('socket', Client::selectTransport('auto', $tcp, false, false));
        $this->assertSame('curl', Client::selectTransport('auto', $unix, true, false));
        $this->assertSame('socket', Client::selectTransport('auto', $unix, false, false));
        $this->assertSame('native', Client::selectTransport('auto', $tcp, true, true));
        $this->assertSame('native', Client::selectTransport('auto', $unix, false, true));
        $this->assertSame('curl', Client::selectTransport('auto', $tls, true, true), 'the extension does not speak TLS');
        $this->assertSame('stream', Client::selectTransport('stream', $tcp, true, true));
        $this->assertSame('socket', Client::selectTransport('socket', $tcp, true, true));
        // And what this very PHP picks:
        $fallback = extension_loaded('curl') ? 'curl' : 'socket';
        $expected = extension_loaded('cometbox') ? 'native' : $fallback;
        $client = new Client('http://127.0.0.1:8481');
        $this->assertSame($expected, $client->transportName());
        $client = new Client('unix:///tmp/x.sock');
        $this->assertSame($expected, $client->transportName());
        $client = new Client('https://127.0.0.1:8481');
        $this->assertSame($fallback, $client->transportName());
    }

    public function testForcingNativeWithoutTheExtensionFails(): void
    {
        if (extension_loaded('cometbox')) {
            $this->assertSame('native', (new Client('http://127.0.0.1:1', ['transport' => 'native']))->transportName());
            $this->expectException(InvalidArgument::class);
            new Client('https://127.0.0.1:1', ['transport' => 'native']);
            return;
        }
        $this->expectException(InvalidArgument::class);
        new Client('http://127.0.0.1:1', ['transport' => 'native']);
    }

    public function testForcingCurlWithoutTheExtensionFails(): void
    {
        if (extension_loaded('curl')) {
            $this->assertSame('curl', (new Client('http://127.0.0.1:1', ['transport' => 'curl']))->transportName());
            return;
        }
        $this->expectException(InvalidArgument::class);
        new Client('http://127.0.0.1:1', ['transport' => 'curl']);
    }

    public function testStreamTransportRefusesUnixSockets(): void
    {
        $this->expectException(InvalidArgument::class);
        $this->expectExceptionMessage('Unix socket');
        new Client('unix:///run/cometbox/ingest.sock', ['transport' => 'stream']);
    }

    public function testBadOptionsAreRefused(): void
    {
        foreach ([
            ['transport' => 'carrier-pigeon'],
            ['timeout' => 0],
            ['timeout' => '2'],
            ['retries' => -1],
            ['kye' => 'x'],
            ['key' => "a\r\nX-Injected: 1"],
        ] as $options) {
            try {
                new Client('http://127.0.0.1:8481', $options);
                $this->fail('accepted ' . json_encode($options));
            } catch (InvalidArgument $e) {
                $this->assertSame('invalid-argument', $e->getErrorCode());
            }
        }
        foreach (['ftp://x', 'localhost:8481', 'unix:', 'http://u:p@h:1'] as $url) {
            try {
                new Client($url);
                $this->fail("accepted $url");
            } catch (InvalidArgument $e) {
                $this->addToAssertionCount(1);
            }
        }
    }

    public function testEndpointParsing(): void
    {
        $e = Endpoint::parse('unix:///run/cometbox/ingest.sock');
        $this->assertSame('/run/cometbox/ingest.sock', $e->socketPath);
        $this->assertSame('/run/cometbox/ingest.sock', Endpoint::parse('unix:/run/cometbox/ingest.sock')->socketPath);
        $e = Endpoint::parse('http://[::1]:8481/prefix/');
        $this->assertSame('::1', $e->host);
        $this->assertSame('[::1]:8481', $e->hostHeader());
        $this->assertSame('/prefix/stats', $e->target('/stats'));
        $this->assertSame('http://[::1]:8481/prefix/stats', $e->url('/stats'));
        $this->assertSame('example.com', Endpoint::parse('http://example.com')->hostHeader());
    }

    public static function errorReplies(): array
    {
        return [
            'malformed xml' => [400, '<error code="malformed-xml" line="1">unexpected end</error>', RequestRejected::class, 'malformed-xml'],
            'invalid json' => [400, '<error code="invalid-json" line="3">message 2: expected value at column 9</error>', RequestRejected::class, 'invalid-json'],
            'invalid id' => [400, '<error code="invalid-id">bad client id</error>', RequestRejected::class, 'invalid-id'],
            'invalid request' => [400, '<error code="invalid-request">unknown element</error>', RequestRejected::class, 'invalid-request'],
            'unauthorized' => [401, '<error code="unauthorized">missing key</error>', Unauthorized::class, 'unauthorized'],
            'too large' => [413, '<error code="too-large">payload over 65536 bytes</error>', RequestRejected::class, 'too-large'],
            'media type' => [415, '<error code="unsupported-media-type">text/plain</error>', RequestRejected::class, 'unsupported-media-type'],
            'overloaded' => [503, '<error code="overloaded">busy</error>', Unavailable::class, 'overloaded'],
            'shutting down' => [503, '<error code="shutting-down">bye</error>', Unavailable::class, 'shutting-down'],
            'json error' => [400, '{"error":"invalid-request","message":"nope"}', RequestRejected::class, 'invalid-request'],
            'empty 413' => [413, '', RequestRejected::class, 'too-large'],
            'proxy 502' => [502, '<html>Bad Gateway</html>', CometBoxException::class, 'unexpected-response'],
        ];
    }

    /**
     * @dataProvider errorReplies
     */
    public function testErrorMapping(int $status, string $body, string $class, string $code): void
    {
        $t = new ScriptedTransport([new Response($status, [], $body)]);
        $client = new Client('http://127.0.0.1:1', ['transport' => $t]);
        try {
            $client->send('alice', 1);
            $this->fail('no exception');
        } catch (CometBoxException $e) {
            $this->assertSame($class, get_class($e));
            $this->assertSame($code, $e->getErrorCode());
            $this->assertSame($status, $e->getHttpStatus());
            $this->assertSame($status, $e->getCode());
            if (strpos($body, 'line="3"') !== false) {
                $this->assertSame(3, $e->getErrorLine());
                $this->assertStringContainsString('message 2: expected value at column 9', $e->getMessage());
            }
        }
    }

    public function testRequestsCarryKeyAndXml(): void
    {
        $t = new ScriptedTransport([new Response(200, [], '<ok accepted="3"/>')]);
        $client = new Client('http://127.0.0.1:1', ['transport' => $t, 'key' => 'k3y']);
        $this->assertSame(3, $client->batch()->send('a', 1)->publish('c', 2)->disconnect('b')->commit());
        [$method, $path, $headers, $body] = $t->requests[0];
        $this->assertSame('POST', $method);
        $this->assertSame('/', $path);
        $this->assertSame('Bearer k3y', $headers['Authorization']);
        $this->assertSame('application/xml', $headers['Content-Type']);
        $this->assertStringContainsString('<batch><message to="a">1</message>', $body);
    }

    public function testEmptyBatchSendsNothing(): void
    {
        $t = new ScriptedTransport([]);
        $client = new Client('http://127.0.0.1:1', ['transport' => $t]);
        $this->assertSame(0, $client->batch()->commit());
        $this->assertSame(0, $client->subscribe('a', []));
        $this->assertSame([], $t->requests);
    }

    public function testFailedBatchKeepsItsCommands(): void
    {
        $t = new ScriptedTransport([new Response(503, [], '<error code="overloaded"/>'), new Response(200, [], '<ok accepted="1"/>')]);
        $client = new Client('http://127.0.0.1:1', ['transport' => $t]);
        $batch = $client->batch()->send('a', 1);
        try {
            $batch->commit();
            $this->fail('no exception');
        } catch (Unavailable $e) {
            $this->assertTrue($e->isSafeToRetry());
        }
        $this->assertCount(1, $batch);
        $this->assertSame(1, $batch->commit());
        $this->assertCount(0, $batch);
    }

    public function testNothingIsRetriedByDefault(): void
    {
        $t = new ScriptedTransport([new Unavailable('refused', 'connection-failed'), new Response(200, [], '<ok accepted="1"/>')]);
        $client = new Client('http://127.0.0.1:1', ['transport' => $t]);
        try {
            $client->send('a', 1);
            $this->fail('no exception');
        } catch (Unavailable $e) {
            $this->assertSame('connection-failed', $e->getErrorCode());
        }
        $this->assertCount(1, $t->requests);
    }

    public function testRetriesOnlyWhatWasNotApplied(): void
    {
        $t = new ScriptedTransport([
            new Unavailable('refused', 'connection-failed'),
            new Response(503, [], '<error code="overloaded"/>'),
            new Response(200, [], '<ok accepted="1"/>'),
        ]);
        $client = new Client('http://127.0.0.1:1', ['transport' => $t, 'retries' => 2, 'retry_delay' => 0.01]);
        $this->assertSame(1, $client->send('a', 1));
        $this->assertCount(3, $t->requests);

        // A timeout may have been applied: never retried.
        $t = new ScriptedTransport([new Unavailable('slow', 'timeout'), new Response(200, [], '<ok accepted="1"/>')]);
        $client = new Client('http://127.0.0.1:1', ['transport' => $t, 'retries' => 3, 'retry_delay' => 0.01]);
        try {
            $client->send('a', 1);
            $this->fail('no exception');
        } catch (Unavailable $e) {
            $this->assertSame('timeout', $e->getErrorCode());
            $this->assertFalse($e->isSafeToRetry());
        }
        $this->assertCount(1, $t->requests);
    }

    public function testTokenWithoutSecretAsksTheServer(): void
    {
        $t = new ScriptedTransport([new Response(200, [], '<token expires="2000000000">aaa.bbb.ccc</token>')]);
        $client = new Client('http://127.0.0.1:1', ['transport' => $t]);
        $this->assertSame('aaa.bbb.ccc', $client->token('user:1', 600, ['room:1', 'news/*']));
        [$method, $path, $headers, $body] = $t->requests[0];
        $this->assertSame(['POST', '/token'], [$method, $path]);
        $this->assertSame('application/x-www-form-urlencoded', $headers['Content-Type']);
        $this->assertSame('client=user%3A1&ttl=600&channel=room%3A1&channel=news%2F%2A', $body);
    }

    public function testPresenceIsNullOn404(): void
    {
        $t = new ScriptedTransport([new Response(404, [], '<error code="not-found"/>'), new Response(200, [], '{"online":true}')]);
        $client = new Client('http://127.0.0.1:1', ['transport' => $t]);
        $this->assertNull($client->presence('user:1@x'));
        $this->assertSame(['online' => true], $client->presence('a b'));
        $this->assertSame('/clients/user:1@x', $t->requests[0][1]);
        $this->assertSame('/clients/a%20b', $t->requests[1][1]);
    }

    public function testRawRequestsAreChecked(): void
    {
        $client = new Client('http://127.0.0.1:1', ['transport' => new ScriptedTransport([])]);
        foreach ([['GET', 'stats', []], ['GET', '/a b', []], ['get x', '/', []], ['POST', '/', ['X-A' => "1\r\nX-B: 2"]], ['POST', '/', ['Bad Name' => '1']]] as [$method, $path, $headers]) {
            try {
                $client->request($method, $path, null, $headers);
                $this->fail('accepted ' . json_encode([$method, $path, $headers]));
            } catch (InvalidArgument $e) {
                $this->addToAssertionCount(1);
            }
        }
    }
}
