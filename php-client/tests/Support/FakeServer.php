<?php

declare(strict_types=1);

namespace CometBox\Tests\Support;

/**
 * Runs tests/Support/fake-server.php in its own PHP process (same binary and
 * ini flags as the test run), stopped by its pid.
 */
final class FakeServer
{
    /** @var resource|null */
    private $process;

    /** @var int */
    private $pid;

    /** @var string */
    public $url;

    /** @var string */
    private $dir;

    /**
     * @param string[] $replies raw HTTP replies, one per expected connection ('-' = never answer)
     */
    public function __construct(array $replies, bool $unix = false)
    {
        static $n = 0;
        $n++;
        $this->dir = sys_get_temp_dir() . '/cbphp-fake-' . getmypid() . '-' . $n;
        @mkdir($this->dir, 0700, true);
        $files = [];
        foreach ($replies as $i => $reply) {
            if ($reply === '-') {
                $files[] = '-';
                continue;
            }
            $file = $this->dir . "/reply$i";
            file_put_contents($file, $reply);
            $files[] = $file;
        }
        $ready = $this->dir . '/ready';
        $listen = $unix ? 'unix://' . $this->dir . '/s.sock' : 'tcp://127.0.0.1:0';
        $php = PHP_BINARY;
        $args = [$php];
        // Same ini as this run (php -n ... keeps working).
        if (php_ini_loaded_file() === false) {
            $args[] = '-n';
        }
        $args = array_merge($args, [__DIR__ . '/fake-server.php', $listen, $ready, $this->dir . '/log'], $files);
        $this->process = proc_open($args, [0 => ['file', '/dev/null', 'r'], 1 => ['file', $this->dir . '/out', 'a'], 2 => ['file', $this->dir . '/out', 'a']], $pipes);
        if (!is_resource($this->process)) {
            throw new \RuntimeException('cannot start the fake server');
        }
        $this->pid = (int) proc_get_status($this->process)['pid'];
        $deadline = microtime(true) + 10;
        while (!is_file($ready)) {
            if (!proc_get_status($this->process)['running'] || microtime(true) > $deadline) {
                $this->stop();
                throw new \RuntimeException('fake server did not start: ' . @file_get_contents($this->dir . '/out'));
            }
            usleep(10000);
        }
        $this->url = (string) file_get_contents($ready);
        if ($unix) {
            $this->url = 'unix://' . $this->dir . '/s.sock';
        }
    }

    /** The raw requests received so far. */
    public function requests(): array
    {
        $log = (string) @file_get_contents($this->dir . '/log');
        return array_values(array_filter(explode("\n=====\n", $log), 'strlen'));
    }

    public function stop(): void
    {
        if ($this->process === null) {
            return;
        }
        if (proc_get_status($this->process)['running']) {
            if (function_exists('posix_kill')) {
                posix_kill($this->pid, 15);
            } else {
                exec('kill ' . $this->pid);
            }
        }
        proc_close($this->process);
        $this->process = null;
        foreach (glob($this->dir . '/*') ?: [] as $f) {
            @unlink($f);
        }
        @rmdir($this->dir);
    }

    public function __destruct()
    {
        $this->stop();
    }
}
