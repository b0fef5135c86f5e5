<?php

declare(strict_types=1);

namespace CometBox\Tests\Support;

/**
 * The real cometbox binary, started once per PHPUnit run and per kind:
 * 'tcp' (ingest on a TCP port, with an ingest key), 'unix...' (ingest on a
 * Unix socket, with the key), 'plain...' (TCP, no ingest key), all on
 * ephemeral loopback ports; stopped with SIGTERM (by its pid) when PHPUnit
 * exits, or earlier with discard().
 *
 * Binary: $COMETBOX_BIN, default <repo>/target/debug/cometbox.
 */
final class TestServer
{
    public const SECRET = 'php-client-test-secret';
    public const KEY = 'php-client-test-ingest-key';
    public const MAX_PAYLOAD_BYTES = 4096;

    /** @var array<string, self> */
    private static $instances = [];

    /** @var int|null */
    private static $ownerPid;

    /** @var resource|null */
    private $process;

    /** @var int */
    public $pid = 0;

    /** @var string host:port of the public listener */
    public $publicAddress;

    /** @var string URL to hand to CometBox\Client */
    public $ingestUrl;

    /** @var string */
    public $dir;

    /** @var string */
    public $log;

    public static function binary(): string
    {
        $bin = getenv('COMETBOX_BIN');
        if ($bin === false || $bin === '') {
            $bin = dirname(__DIR__, 3) . '/target/debug/cometbox';
        }
        return $bin;
    }

    public static function get(string $kind): self
    {
        if (!isset(self::$instances[$kind])) {
            if (self::$ownerPid === null) {
                self::$ownerPid = getmypid();
                register_shutdown_function([self::class, 'stopAll']);
            }
            self::$instances[$kind] = new self($kind);
        }
        return self::$instances[$kind];
    }

    /** Stops the server of this kind now (the next get() starts a new one). */
    public static function discard(string $kind): void
    {
        if (isset(self::$instances[$kind])) {
            self::$instances[$kind]->stop();
            unset(self::$instances[$kind]);
        }
    }

    public static function stopAll(): void
    {
        if (getmypid() !== self::$ownerPid) {
            return;
        }
        foreach (self::$instances as $server) {
            $server->stop();
        }
        self::$instances = [];
    }

    private function __construct(string $kind)
    {
        $bin = self::binary();
        if (!is_file($bin) || !is_executable($bin)) {
            throw new \RuntimeException("cometbox binary not found at $bin (set COMETBOX_BIN or run php-client/run-tests.sh)");
        }
        $this->dir = sys_get_temp_dir() . '/cbphp-' . getmypid() . '-' . $kind;
        if (!is_dir($this->dir) && !mkdir($this->dir, 0700, true)) {
            throw new \RuntimeException("cannot create {$this->dir}");
        }
        $ready = $this->dir . '/ready.json';
        @unlink($ready);
        $this->log = $this->dir . '/server.log';
        $unix = strncmp($kind, 'unix', 4) === 0;
        $keyless = strncmp($kind, 'plain', 5) === 0;
        $ingest = $unix ? 'unix:' . $this->dir . '/ingest.sock' : '127.0.0.1:0';
        if ($unix) {
            @unlink($this->dir . '/ingest.sock');
        }
        // The server reads every COMETBOX_* variable as configuration; keep
        // the caller's (COMETBOX_BIN included: the server refuses it as an
        // unknown key `bin`) out of its environment and set only ours.
        $inherited = array_filter(getenv(), static function (string $name): bool {
            return strncmp($name, 'COMETBOX_', 9) !== 0;
        }, ARRAY_FILTER_USE_KEY);
        $env = array_merge($inherited, [
            'COMETBOX_PUBLIC__LISTEN' => '127.0.0.1:0',
            'COMETBOX_INGEST__LISTEN' => $ingest,
            'COMETBOX_INGEST__KEY' => $keyless ? '' : self::KEY,
            'COMETBOX_AUTH__SECRET' => self::SECRET,
            'COMETBOX_LIMITS__POLL_TIMEOUT' => '1s',
            'COMETBOX_LIMITS__MAX_PAYLOAD_BYTES' => (string) self::MAX_PAYLOAD_BYTES,
        ]);
        $this->process = proc_open(
            [$bin, '--ready-file', $ready],
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', $this->log, 'a'], 2 => ['file', $this->log, 'a']],
            $pipes,
            $this->dir,
            $env
        );
        if (!is_resource($this->process)) {
            throw new \RuntimeException("cannot start $bin");
        }
        $this->pid = (int) proc_get_status($this->process)['pid'];

        $deadline = microtime(true) + 30.0;
        while (!is_file($ready)) {
            $status = proc_get_status($this->process);
            if (!$status['running']) {
                $this->process = null;
                throw new \RuntimeException("cometbox exited with {$status['exitcode']} before it was ready:\n" . @file_get_contents($this->log));
            }
            if (microtime(true) > $deadline) {
                $this->stop();
                throw new \RuntimeException("cometbox not ready within 30 s:\n" . @file_get_contents($this->log));
            }
            usleep(20000);
        }
        $addresses = json_decode((string) file_get_contents($ready), true);
        if (!is_array($addresses) || !isset($addresses['public'], $addresses['ingest'])) {
            $this->stop();
            throw new \RuntimeException('unexpected ready file: ' . file_get_contents($ready));
        }
        $this->publicAddress = $addresses['public'];
        $ingestAddress = $addresses['ingest'];
        $this->ingestUrl = strncmp($ingestAddress, 'unix:', 5) === 0 ? $ingestAddress : 'http://' . $ingestAddress;
    }

    public function stop(): void
    {
        if ($this->process === null) {
            return;
        }
        $status = proc_get_status($this->process);
        if ($status['running']) {
            self::kill($this->pid, 15);
            $deadline = microtime(true) + 10.0;
            while (proc_get_status($this->process)['running'] && microtime(true) < $deadline) {
                usleep(20000);
            }
            if (proc_get_status($this->process)['running']) {
                self::kill($this->pid, 9);
            }
        }
        proc_close($this->process);
        $this->process = null;
        if (getenv('COMETBOX_KEEP_TEST_LOGS') === false) {
            foreach (glob($this->dir . '/*') ?: [] as $f) {
                @unlink($f);
            }
            @rmdir($this->dir);
        }
    }

    private static function kill(int $pid, int $signal): void
    {
        if ($pid <= 0) {
            return;
        }
        if (function_exists('posix_kill')) {
            posix_kill($pid, $signal);
        } else {
            exec('kill -' . $signal . ' ' . $pid);
        }
    }

    /**
     * GET /poll on the public listener.
     *
     * @param array<string, string> $params extra query parameters (since, channels, timeout)
     * @return array{0: int, 1: mixed} [status, decoded JSON body]
     */
    public function poll(string $token, array $params = []): array
    {
        $query = http_build_query(['token' => $token] + $params, '', '&', PHP_QUERY_RFC3986);
        $context = stream_context_create(['http' => [
            'method' => 'GET',
            'ignore_errors' => true,
            'timeout' => 10,
            'header' => "Connection: close\r\n",
            'protocol_version' => 1.1,
        ]]);
        $body = file_get_contents('http://' . $this->publicAddress . '/poll?' . $query, false, $context);
        if ($body === false) {
            throw new \RuntimeException('poll failed');
        }
        $meta = function_exists('http_get_last_response_headers') ? http_get_last_response_headers() : $http_response_header;
        $status = 0;
        foreach ((array) $meta as $line) {
            if (preg_match('#^HTTP/\S+\s+(\d{3})#', $line, $m)) {
                $status = (int) $m[1];
            }
        }
        return [$status, json_decode($body, true)];
    }

    /** The messages of one poll that must succeed; $timeout seconds to wait when empty. */
    public function messages(string $token, int $timeout = 1, array $params = []): array
    {
        [$status, $body] = $this->poll($token, ['timeout' => (string) $timeout] + $params);
        if ($status !== 200 || !is_array($body) || !isset($body['messages'])) {
            throw new \RuntimeException("poll answered $status: " . json_encode($body));
        }
        return $body['messages'];
    }
}
