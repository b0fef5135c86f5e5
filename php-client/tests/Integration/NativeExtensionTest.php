<?php

declare(strict_types=1);

namespace CometBox\Tests\Integration;

use CometBox\Client;
use CometBox\Exception\InvalidArgument;
use CometBox\Exception\Unavailable;
use CometBox\Jwt;
use CometBox\Tests\Support\FakeServer;
use CometBox\Tests\Support\TestServer;
use PHPUnit\Framework\TestCase;

/**
 * Which path this run takes (the cometbox extension or php-client's own
 * transports), and what only the extension does: one connection per worker
 * reused across calls, a closed idle connection replaced before sending,
 * and a sent request without a reply reported, never resent.
 *
 * php-client/run-tests.sh sets COMETBOX_PHP_EXT (and loads that .so) for
 * the run with the extension; without it, the extension must be absent, so
 * neither run can take the other's path unnoticed.
 */
final class NativeExtensionTest extends TestCase
{
    private static function expectNative(): bool
    {
        $ext = getenv('COMETBOX_PHP_EXT');
        return $ext !== false && $ext !== '';
    }

    private function requireNative(): void
    {
        if (!extension_loaded('cometbox')) {
            // Only in the run without the extension, which
            // testThisRunTakesTheExpectedPath pins down.
            $this->markTestSkipped('the cometbox extension is not loaded in this run');
        }
    }

    public function testThisRunTakesTheExpectedPath(): void
    {
        $client = new Client(TestServer::get('tcp')->ingestUrl, ['key' => TestServer::KEY]);
        if (self::expectNative()) {
            $this->assertTrue(extension_loaded('cometbox'), 'COMETBOX_PHP_EXT is set but the extension is not loaded');
            $this->assertSame('native', $client->transportName());
            $this->assertTrue(function_exists('cometbox_native_request'));
        } else {
            $this->assertFalse(extension_loaded('cometbox'), 'the extension is loaded in the run without it');
            $this->assertContains($client->transportName(), ['curl', 'socket']);
            $this->expectException(InvalidArgument::class);
            new Client(TestServer::get('tcp')->ingestUrl, ['transport' => 'native']);
        }
        $this->assertSame(1, $client->send('which-path', 1));
    }

    /** One connection per address for many calls and many Client objects. */
    public function testOneConnectionPerAddressIsReused(): void
    {
        $this->requireNative();
        foreach (['tcp', 'unix'] as $kind) {
            $server = TestServer::get($kind);
            \cometbox_native_close();
            $before = \cometbox_native_stats();
            $id = sprintf('php-native-%s-%d', $kind, getmypid());
            for ($i = 0; $i < 20; $i++) {
                // A new Client per call, as a PHP page would build one.
                $client = new Client($server->ingestUrl, ['key' => TestServer::KEY]);
                $this->assertSame(1, $client->send($id, $i));
            }
            $after = \cometbox_native_stats();
            $this->assertSame(1, $after['connects'] - $before['connects'], "$kind: connections opened");
            $this->assertSame(19, $after['reused'] - $before['reused'], "$kind: requests on the kept connection");
            $this->assertSame(1, $after['open_connections']);
            $this->assertSame(getmypid(), $after['pid']);
            $messages = $server->messages(Jwt::mint(TestServer::SECRET, $id, 300, []));
            $this->assertSame(range(0, 19), array_column($messages, 'data'), "$kind: each send once, in order");
        }
    }

    /** The server closed the idle connection: seen before sending, a new one is opened, the request goes once. */
    public function testAClosedIdleConnectionIsReplacedBeforeSending(): void
    {
        $this->requireNative();
        $ok = '<ok accepted="1"/>';
        $reply = "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: " . strlen($ok) . "\r\n\r\n$ok";
        $server = new FakeServer([$reply, $reply]); // closes after each reply
        try {
            $client = new Client($server->url, ['transport' => 'native', 'timeout' => 5]);
            $before = \cometbox_native_stats();
            $this->assertSame(1, $client->send('a', 1));
            usleep(100000); // the close arrives
            $this->assertSame(1, $client->send('a', 2));
            $after = \cometbox_native_stats();
            $this->assertSame(2, $after['connects'] - $before['connects']);
            $this->assertSame(1, $after['stale_dropped'] - $before['stale_dropped']);
            $this->assertSame(0, $after['unacknowledged'] - $before['unacknowledged']);
            $requests = $server->requests();
            $this->assertCount(2, $requests, 'each request reached the server once');
            $this->assertStringContainsString('>1</message>', $requests[0]);
            $this->assertStringContainsString('>2</message>', $requests[1]);
        } finally {
            $server->stop();
        }
    }

    /**
     * A request written on a kept connection that then closes without a
     * reply may have been applied: reported as connection-lost (not safe to
     * retry), never resent, even with 'retries'.
     */
    public function testASentRequestWithoutReplyIsReportedNotResent(): void
    {
        $this->requireNative();
        $dir = sys_get_temp_dir() . '/cbphp-native-' . getmypid();
        @mkdir($dir, 0700, true);
        $sock = "$dir/s.sock";
        $ready = "$dir/ready";
        $log = "$dir/log";
        @unlink($ready);
        @unlink($log);
        $args = [PHP_BINARY];
        if (php_ini_loaded_file() === false) {
            $args[] = '-n';
        }
        $args = array_merge($args, [dirname(__DIR__) . '/Support/drop-second-server.php', $sock, $ready, $log]);
        $process = proc_open($args, [0 => ['file', '/dev/null', 'r'], 1 => ['file', "$dir/out", 'a'], 2 => ['file', "$dir/out", 'a']], $pipes);
        $this->assertIsResource($process);
        $pid = (int) proc_get_status($process)['pid'];
        try {
            $deadline = microtime(true) + 10;
            while (!is_file($ready)) {
                $this->assertTrue(proc_get_status($process)['running'] && microtime(true) < $deadline, 'server did not start: ' . @file_get_contents("$dir/out"));
                usleep(10000);
            }
            $client = new Client("unix://$sock", ['transport' => 'native', 'timeout' => 3, 'retries' => 2, 'retry_delay' => 0.01]);
            $this->assertSame(1, $client->send('a', 1));
            $before = \cometbox_native_stats();
            try {
                $client->send('a', 2);
                $this->fail('no exception');
            } catch (Unavailable $e) {
                $this->assertSame('connection-lost', $e->getErrorCode(), $e->getMessage());
                $this->assertFalse($e->isSafeToRetry());
            }
            $after = \cometbox_native_stats();
            $this->assertSame(1, $after['unacknowledged'] - $before['unacknowledged']);
            $this->assertSame(0, $after['resent_unwritten'] - $before['resent_unwritten']);
            $this->assertSame(0, $after['connects'] - $before['connects'], 'no new connection: nothing was resent');
            $this->assertSame(2, substr_count((string) @file_get_contents($log), 'request'));
        } finally {
            if (proc_get_status($process)['running']) {
                posix_kill($pid, 15);
            }
            proc_close($process);
            foreach (glob("$dir/*") ?: [] as $f) {
                @unlink($f);
            }
            @rmdir($dir);
        }
    }
}
