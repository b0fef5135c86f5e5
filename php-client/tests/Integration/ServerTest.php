<?php

declare(strict_types=1);

namespace CometBox\Tests\Integration;

use CometBox\Client;
use CometBox\Exception\CometBoxException;
use CometBox\Exception\RequestRejected;
use CometBox\Exception\Unauthorized;
use CometBox\Jwt;
use CometBox\RawJson;
use CometBox\Tests\Support\TestServer;
use PHPUnit\Framework\TestCase;

/**
 * Every method over every transport against the real cometbox binary
 * (tests/Support/TestServer.php), checked from the browser side by polling
 * the public listener.
 */
final class ServerTest extends TestCase
{
    public static function transports(): array
    {
        $cases = [];
        foreach (['auto', 'socket', 'curl', 'stream'] as $t) {
            $cases["$t tcp"] = [$t, 'tcp'];
        }
        foreach (['auto', 'socket', 'curl'] as $t) {
            $cases["$t unix"] = [$t, 'unix'];
        }
        // With the extension loaded ('auto' is then 'native' too).
        if (extension_loaded('cometbox')) {
            $cases['native tcp'] = ['native', 'tcp'];
            $cases['native unix'] = ['native', 'unix'];
        }
        return $cases;
    }

    /**
     * @param array<string, mixed> $options
     */
    private function client(string $transport, string $kind, array $options = []): Client
    {
        if ($transport === 'curl' && !extension_loaded('curl')) {
            $this->markTestSkipped('ext-curl is not loaded in this run');
        }
        return new Client(
            TestServer::get($kind)->ingestUrl,
            $options + ['transport' => $transport, 'key' => TestServer::KEY, 'timeout' => 5.0]
        );
    }

    private function server(string $kind): TestServer
    {
        return TestServer::get($kind);
    }

    private static function id(string $what): string
    {
        static $n = 0;
        $n++;
        return sprintf('php-%s-%d-%d-%s', $what, getmypid(), $n, bin2hex(random_bytes(3)));
    }

    private static function token(string $clientId, array $channels = [], int $ttl = 300): string
    {
        return Jwt::mint(TestServer::SECRET, $clientId, $ttl, $channels);
    }

    /** @dataProvider transports */
    public function testSendIsDeliveredWithItsEvent(string $transport, string $kind): void
    {
        $client = $this->client($transport, $kind);
        $id = self::id('send');
        $data = ['text' => 'Your export is ready', 'n' => 42, 'f' => 1.5, 'ok' => true, 'nil' => null, 'list' => [1, 'two']];
        $this->assertSame(1, $client->send($id, $data, 'notice'));
        $this->assertSame(1, $client->send($id, 'just a string'));
        $messages = $this->server($kind)->messages(self::token($id));
        $this->assertCount(2, $messages);
        $this->assertSame($data, $messages[0]['data']);
        $this->assertSame('notice', $messages[0]['event']);
        $this->assertArrayNotHasKey('channel', $messages[0]);
        $this->assertSame('just a string', $messages[1]['data']);
        $this->assertArrayNotHasKey('event', $messages[1]);
    }

    /** @dataProvider transports */
    public function testSubscribePublishUnsubscribe(string $transport, string $kind): void
    {
        $client = $this->client($transport, $kind);
        $a = self::id('sub-a');
        $b = self::id('sub-b');
        $room = self::id('room');
        $other = self::id('room');
        $this->assertSame(1, $client->subscribe($a, $room));
        $this->assertSame(2, $client->subscribe($b, [$room, $other]));
        $client->publish($room, ['from' => 'bob', 'text' => 'hello'], 'chat');
        foreach ([$a, $b] as $id) {
            $messages = $this->server($kind)->messages(self::token($id));
            $this->assertCount(1, $messages, $id);
            $this->assertSame($room, $messages[0]['channel']);
            $this->assertSame('chat', $messages[0]['event']);
            $this->assertSame(['from' => 'bob', 'text' => 'hello'], $messages[0]['data']);
        }
        $presence = $client->presence($b);
        $this->assertIsArray($presence);

        $this->assertSame(1, $client->unsubscribe($b, $room));
        $client->publish($room, 'second');
        $client->publish($other, 'third');
        // Without a cursor a poll returns everything still retained.
        $hello = ['from' => 'bob', 'text' => 'hello'];
        $this->assertSame([$hello, 'second'], array_column($this->server($kind)->messages(self::token($a)), 'data'));
        $this->assertSame([$hello, 'third'], array_column($this->server($kind)->messages(self::token($b)), 'data'));
    }

    /** @dataProvider transports */
    public function testDisconnectDropsTheMailbox(string $transport, string $kind): void
    {
        $client = $this->client($transport, $kind);
        $id = self::id('disc');
        $client->send($id, 'before');
        $this->assertNotNull($client->presence($id));
        $this->assertSame(1, $client->disconnect($id));
        $this->assertNull($client->presence($id));
        $this->assertSame([], $this->server($kind)->messages(self::token($id), 1));
    }

    /** @dataProvider transports */
    public function testBatchIsAppliedInOrder(string $transport, string $kind): void
    {
        $client = $this->client($transport, $kind);
        $id = self::id('batch');
        $room = self::id('room');
        $accepted = $client->batch()
            ->send($id, ['step' => 1], 'one')
            ->subscribe($id, $room)
            ->publish($room, ['step' => 2], 'two', ['ttl' => 60])
            ->send($id, 'three', null, ['type' => 'text'])
            ->commit();
        $this->assertSame(4, $accepted);
        $messages = $this->server($kind)->messages(self::token($id));
        $this->assertSame([['step' => 1], ['step' => 2], 'three'], array_column($messages, 'data'));
        $this->assertSame($room, $messages[1]['channel']);
    }

    /** @dataProvider transports */
    public function testLargeBatchIsAccepted(string $transport, string $kind): void
    {
        // Over 64 KiB: sent with Expect: 100-continue.
        $client = $this->client($transport, $kind);
        $id = self::id('large');
        $batch = $client->batch();
        for ($i = 0; $i < 40; $i++) {
            $batch->send($id, ['i' => $i, 'pad' => str_repeat('é', 1500)]);
        }
        $this->assertGreaterThan(65536, strlen($batch->toXml()));
        $start = microtime(true);
        $this->assertSame(40, $batch->commit());
        $this->assertLessThan(0.9, microtime(true) - $start, 'waited for 100 Continue instead of getting it');
        $messages = $this->server($kind)->messages(self::token($id));
        $this->assertSame(range(0, 39), array_column(array_column($messages, 'data'), 'i'));
    }

    /** @dataProvider transports */
    public function testBatchIsAtomic(string $transport, string $kind): void
    {
        $client = $this->client($transport, $kind);
        $id = self::id('atomic');
        try {
            $client->batch()->send($id, 'good')->send('not a valid id!', 'bad')->commit();
            $this->fail('no exception');
        } catch (RequestRejected $e) {
            $this->assertSame('invalid-id', $e->getErrorCode());
            $this->assertSame(400, $e->getHttpStatus());
        }
        $this->assertSame([], $this->server($kind)->messages(self::token($id), 1));
    }

    /** @dataProvider transports */
    public function testTokensFromTheServerAndMintedLocally(string $transport, string $kind): void
    {
        $viaServer = $this->client($transport, $kind);
        $local = $this->client($transport, $kind, ['secret' => TestServer::SECRET]);
        $id = self::id('tok');
        $room = self::id('room');
        $viaServer->send($id, 'hi');
        foreach ([$viaServer, $local] as $client) {
            $token = $client->token($id, 120, [$room, 'lobby:*']);
            $claims = Jwt::claims($token);
            $this->assertSame($id, $claims['sub']);
            $this->assertGreaterThan(time(), $claims['exp']);
            $this->assertLessThanOrEqual(time() + 121, $claims['exp']);
            [$status, $body] = $this->server($kind)->poll($token, ['timeout' => '1', 'channels' => "$room,lobby:7"]);
            $this->assertSame(200, $status, json_encode($body));
            $this->assertSame('hi', $body['messages'][0]['data']);
            [$status, $body] = $this->server($kind)->poll($token, ['timeout' => '1', 'channels' => 'elsewhere']);
            $this->assertSame(403, $status);
            $this->assertSame('channel-forbidden', $body['error']);
        }
        // The page's own subscription through the token works for publish.
        $viaServer->publish('lobby:7', 'from the lobby');
        $messages = $this->server($kind)->messages($local->token($id, 60, ['lobby:*']));
        $this->assertContains('from the lobby', array_column($messages, 'data'));
    }

    public function testExpiredAndForgedTokensAreRefused(): void
    {
        $server = $this->server('tcp');
        $id = self::id('exp');
        // exp an hour ago: beyond any clock leeway.
        $expired = Jwt::mint(TestServer::SECRET, $id, 60, [], time() - 3660);
        [$status, $body] = $server->poll($expired, ['timeout' => '1']);
        $this->assertSame(401, $status);
        $this->assertSame('token-expired', $body['error']);

        [$status, $body] = $server->poll(Jwt::mint('not-the-secret', $id, 60), ['timeout' => '1']);
        $this->assertSame(401, $status);
        $this->assertSame('invalid-token', $body['error']);
    }

    /** @dataProvider transports */
    public function testStatsPresenceHealth(string $transport, string $kind): void
    {
        $client = $this->client($transport, $kind);
        $id = self::id('stats');
        $client->send($id, 1);
        $stats = $client->stats();
        foreach (['clients', 'open_polls', 'queued_messages', 'messages_in', 'messages_out', 'uptime_s'] as $key) {
            $this->assertArrayHasKey($key, $stats);
        }
        $this->assertGreaterThanOrEqual(1, $stats['messages_in']);
        $presence = $client->presence($id);
        $this->assertIsArray($presence);
        $this->assertNull($client->presence(self::id('nobody')));
        $this->assertTrue($client->health());
    }

    public static function hostileStrings(): array
    {
        return [
            'markup' => '<script>alert("x")</script><!-- -->',
            'ampersands' => 'a & b &amp; &lt; &#60; &unknown; &#x0;',
            'cdata end' => ']]> <![CDATA[ x ]]> ]]]]><![CDATA[>',
            'quotes' => '"double" \'single\' `back`',
            'whitespace' => "  lead\ttab\nline\r\ncrlf\rcr  ",
            'controls' => "nul\x00 bel\x07 esc\x1b vt\x0b ff\x0c del\x7f c1\u{85}",
            'non-ascii' => "caf\u{e9} \u{4e2d}\u{6587} \u{1F600} zwsp\u{200B} ls\u{2028} bom\u{FEFF} rtl\u{202E}",
            'non-characters' => "\u{FFFE}\u{FFFF}x",
            'entity-looking' => '<!DOCTYPE x [<!ENTITY a "b">]>&a;',
            'json-looking' => '{"a": 1} \\" \\u0000 \/',
            'xml declaration' => '<?xml version="1.0"?><batch/>',
            'empty' => '',
        ];
    }

    /** @dataProvider transports */
    public function testHostileStringsArriveIntact(string $transport, string $kind): void
    {
        $client = $this->client($transport, $kind);
        $id = self::id('hostile');
        $expected = [];
        foreach (self::hostileStrings() as $name => $s) {
            $client->send($id, ['s' => $s, $s => $name]);
            $expected[] = ['s' => $s, $s => $name];
            if ($s !== '') {
                $client->send($id, $s, null, ['type' => 'text']);
                $expected[] = $s;
            }
        }
        $messages = $this->server($kind)->messages(self::token($id));
        $got = array_column($messages, 'data');
        $this->assertCount(count($expected), $got);
        foreach ($expected as $i => $value) {
            $this->assertSame($value, $got[$i], "message $i: " . json_encode($value));
        }
    }

    public function testTextPayloadKeepsItsWhitespace(): void
    {
        // type=text is delivered as is: not trimmed, CR kept.
        $client = $this->client('socket', 'tcp');
        $id = self::id('ws');
        $client->send($id, "  padded  ", null, ['type' => 'text']);
        $client->send($id, "\r\n", null, ['type' => 'text']);
        $this->assertSame(['  padded  ', "\r\n"], array_column($this->server('tcp')->messages(self::token($id)), 'data'));
    }

    /** @dataProvider transports */
    public function testServerErrorsAreTypedExceptions(string $transport, string $kind): void
    {
        $client = $this->client($transport, $kind);
        $id = self::id('err');
        $cases = [
            'wrong key' => [function () use ($transport, $kind, $id) {
                $this->client($transport, $kind, ['key' => 'wrong'])->send($id, 1);
            }, Unauthorized::class, 'unauthorized', 401],
            'no key' => [function () use ($transport, $kind) {
                $this->client($transport, $kind, ['key' => null])->stats();
            }, Unauthorized::class, 'unauthorized', 401],
            'invalid client id' => [function () use ($client) {
                $client->send('bad id with spaces', 1);
            }, RequestRejected::class, 'invalid-id', 400],
            'invalid channel' => [function () use ($client, $id) {
                $client->subscribe($id, 'no spaces allowed');
            }, RequestRejected::class, 'invalid-id', 400],
            'id too long' => [function () use ($client) {
                $client->send(str_repeat('a', 129), 1);
            }, RequestRejected::class, 'invalid-id', 400],
            'payload over max_payload_bytes' => [function () use ($client, $id) {
                $client->send($id, str_repeat('x', TestServer::MAX_PAYLOAD_BYTES + 10));
            }, RequestRejected::class, 'too-large', 413],
            'body over max_body_bytes' => [function () use ($client, $id) {
                $batch = $client->batch();
                for ($i = 0; $i < 300; $i++) { // 300 x 4000 bytes > 1 MiB
                    $batch->send($id, str_repeat('x', 4000));
                }
                $batch->commit();
            }, RequestRejected::class, 'too-large', 413],
            'ttl of 0' => [function () use ($client, $id) {
                $client->postXml('<message to="' . $id . '" ttl="0">1</message>');
            }, RequestRejected::class, 'invalid-request', 400],
            'invalid json' => [function () use ($client, $id) {
                $client->send($id, new RawJson('{"unterminated": '));
            }, RequestRejected::class, 'invalid-json', 400],
            'malformed xml' => [function () use ($client) {
                $client->postXml('<message to="a">1');
            }, RequestRejected::class, 'malformed-xml', 400],
            'doctype' => [function () use ($client) {
                $client->postXml('<!DOCTYPE m [<!ENTITY x "y">]><message to="a">&x;</message>');
            }, RequestRejected::class, 'malformed-xml', 400],
            'unknown element' => [function () use ($client) {
                $client->postXml('<frobnicate client="a"/>');
            }, RequestRejected::class, 'invalid-request', 400],
            'not xml' => [function () use ($client) {
                $client->request('POST', '/', '{"to":"a"}', ['Content-Type' => 'application/json']);
            }, RequestRejected::class, 'unsupported-media-type', 415],
            'token for an invalid id' => [function () use ($client) {
                $client->token('bad id', 60);
            }, RequestRejected::class, 'invalid-id', 400],
        ];
        foreach ($cases as $name => [$call, $class, $code, $status]) {
            try {
                $call();
                $this->fail("$name: no exception");
            } catch (CometBoxException $e) {
                $this->assertSame($class, get_class($e), "$name: " . $e->getMessage());
                $this->assertSame($code, $e->getErrorCode(), "$name: " . $e->getMessage());
                $this->assertSame($status, $e->getHttpStatus(), $name);
            }
        }
        // Nothing of the above reached the mailbox.
        $this->assertSame([], $this->server($kind)->messages(self::token($id), 1));
    }

    public function testStoppedServerIsUnavailableWithinTheTimeout(): void
    {
        $native = extension_loaded('cometbox') ? ['native'] : [];
        foreach (['plain-doomed' => array_merge(['auto', 'socket', 'curl', 'stream'], $native), 'unix-doomed' => array_merge(['auto', 'socket', 'curl'], $native)] as $kind => $transports) {
            $server = TestServer::get($kind);
            $clients = [];
            foreach ($transports as $transport) {
                if ($transport === 'curl' && !extension_loaded('curl')) {
                    continue;
                }
                $clients[$transport] = new Client($server->ingestUrl, ['transport' => $transport, 'key' => TestServer::KEY, 'timeout' => 1.5]);
                $this->assertSame(1, $clients[$transport]->send('doomed', 1));
            }
            TestServer::discard($kind); // SIGTERM, waits for the exit
            foreach ($clients as $transport => $client) {
                $start = microtime(true);
                try {
                    $client->send('doomed', 2);
                    $this->fail("$kind $transport: no exception");
                } catch (\CometBox\Exception\Unavailable $e) {
                    $elapsed = microtime(true) - $start;
                    $this->assertSame('connection-failed', $e->getErrorCode(), "$kind $transport: " . $e->getMessage());
                    $this->assertLessThan(1.5, $elapsed, "$kind $transport took $elapsed s");
                }
                $this->assertFalse($client->health());
            }
        }
    }

    public function testInvalidJsonNamesTheLine(): void
    {
        $client = $this->client('socket', 'tcp');
        $xml = "<batch>\n<message to=\"a\">1</message>\n<message to=\"a\">{bad</message>\n</batch>";
        try {
            $client->postXml($xml);
            $this->fail('no exception');
        } catch (RequestRejected $e) {
            $this->assertSame('invalid-json', $e->getErrorCode());
            $this->assertSame(3, $e->getErrorLine());
            $this->assertNotSame('', $e->getMessage());
        }
    }

    public function testContentTypeWithCharsetIsAccepted(): void
    {
        $client = $this->client('socket', 'tcp');
        $id = self::id('charset');
        $client->request('POST', '/', '<message to="' . $id . '">1</message>', ['Content-Type' => 'application/xml; charset=utf-8']);
        $this->assertSame([1], array_column($this->server('tcp')->messages(self::token($id)), 'data'));
    }

    public function testMessageTtlExpires(): void
    {
        $client = $this->client('socket', 'tcp');
        $id = self::id('ttl');
        $client->send($id, 'short-lived', null, ['ttl' => 1]);
        $client->send($id, 'long-lived', null, ['ttl' => 60]);
        usleep(2300000);
        $this->assertSame(['long-lived'], array_column($this->server('tcp')->messages(self::token($id)), 'data'));
    }
}
