<?php

declare(strict_types=1);

namespace CometBox\Tests\Integration;

use CometBox\Client;
use CometBox\Jwt;
use CometBox\Tests\Support\TestServer;
use PHPUnit\Framework\TestCase;

/**
 * Runs the PHP, Python and curl blocks of README-snippets.md, as written
 * (only the address is replaced), against the real server, and checks what
 * the page receives.
 */
final class SnippetsTest extends TestCase
{
    private const DEFAULT_URL = 'http://127.0.0.1:8481';

    public static function snippets(): array
    {
        $md = (string) file_get_contents(dirname(__DIR__, 2) . '/README-snippets.md');
        preg_match_all('/^```(php|python|sh)\n(.*?)^```/ms', $md, $m, PREG_SET_ORDER);
        $cases = [];
        foreach ($m as [, $lang, $code]) {
            $cases[$lang] = [$lang, $code];
        }
        return $cases;
    }

    public function testAllThreeSnippetsArePresent(): void
    {
        $this->assertSame(['php', 'python', 'sh'], array_keys(self::snippets()));
        // README.md opens with the same five lines.
        $readme = (string) file_get_contents(dirname(__DIR__, 2) . '/README.md');
        $this->assertSame(1, preg_match('/^```php\n(.*?)^```/ms', $readme, $m));
        $this->assertSame(self::snippets()['php'][1], $m[1]);
        $this->assertSame(5, substr_count($m[1], "\n"));
    }

    /**
     * @dataProvider snippets
     */
    public function testSnippet(string $lang, string $code): void
    {
        $server = TestServer::get('plain');
        $this->assertStringContainsString(self::DEFAULT_URL, $code);
        $code = str_replace(self::DEFAULT_URL, $server->ingestUrl, $code);
        $dir = sys_get_temp_dir() . '/cbphp-snippet-' . getmypid();
        @mkdir($dir, 0700, true);

        switch ($lang) {
            case 'php':
                $code = str_replace("require 'php-client/autoload.php';", 'require ' . var_export(dirname(__DIR__, 2) . '/autoload.php', true) . ';', $code);
                $file = "$dir/snippet.php";
                file_put_contents($file, "<?php\n" . $code . "\necho \$token;\n");
                $command = [PHP_BINARY, $file];
                break;
            case 'python':
                $python = self::which('python3');
                if ($python === null) {
                    $this->markTestSkipped('python3 not installed');
                }
                $file = "$dir/snippet.py";
                file_put_contents($file, $code . "\nprint(token)\n");
                $command = [$python, $file];
                break;
            default:
                if (self::which('curl') === null) {
                    $this->markTestSkipped('curl not installed');
                }
                $file = "$dir/snippet.sh";
                file_put_contents($file, "set -euo pipefail\n" . $code);
                $command = ['bash', $file];
        }

        // A fresh user:42, subscribed to room:42 so the channel message reaches it.
        $admin = new Client($server->ingestUrl, ['transport' => 'socket']);
        $admin->disconnect('user:42');
        $admin->subscribe('user:42', 'room:42');

        [$status, $out, $err] = self::runCommand($command, 20);
        @unlink($file);
        @rmdir($dir);
        $this->assertSame(0, $status, "$lang snippet failed:\n$out\n$err");

        // The token it printed (curl prints the <token> reply) is accepted.
        $this->assertSame(1, preg_match('/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)/', $out, $t), "no token in: $out");
        $claims = Jwt::claims($t[1]);
        $this->assertSame('user:42', $claims['sub']);
        $this->assertSame(['room:*'], $claims['channels']);
        [$pollStatus, $body] = $server->poll($t[1], ['timeout' => '1', 'channels' => 'room:42']);
        $this->assertSame(200, $pollStatus, json_encode($body));
        $messages = $body['messages'];
        $this->assertCount(2, $messages, json_encode($messages));
        $this->assertSame(['text' => 'Your export is ready'], $messages[0]['data']);
        $this->assertSame('notice', $messages[0]['event']);
        $this->assertSame(['from' => 'bob', 'text' => 'hello'], $messages[1]['data']);
        $this->assertSame('chat', $messages[1]['event']);
        $this->assertSame('room:42', $messages[1]['channel']);
    }

    private static function which(string $program): ?string
    {
        foreach (explode(PATH_SEPARATOR, (string) getenv('PATH')) as $dir) {
            if ($dir !== '' && is_file("$dir/$program") && is_executable("$dir/$program")) {
                return "$dir/$program";
            }
        }
        return null;
    }

    /**
     * @param string[] $command
     * @return array{0: int, 1: string, 2: string}
     */
    private static function runCommand(array $command, int $timeout): array
    {
        $proc = proc_open($command, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        if (!is_resource($proc)) {
            throw new \RuntimeException('cannot run ' . implode(' ', $command));
        }
        stream_set_blocking($pipes[1], false);
        stream_set_blocking($pipes[2], false);
        $out = $err = '';
        $deadline = microtime(true) + $timeout;
        $pid = proc_get_status($proc)['pid'];
        while (true) {
            $out .= (string) stream_get_contents($pipes[1]);
            $err .= (string) stream_get_contents($pipes[2]);
            $status = proc_get_status($proc);
            if (!$status['running']) {
                $out .= (string) stream_get_contents($pipes[1]);
                $err .= (string) stream_get_contents($pipes[2]);
                fclose($pipes[1]);
                fclose($pipes[2]);
                proc_close($proc);
                return [$status['exitcode'], $out, $err];
            }
            if (microtime(true) > $deadline) {
                proc_terminate($proc, 9);
                fclose($pipes[1]);
                fclose($pipes[2]);
                proc_close($proc);
                return [-1, $out, $err . "\n(killed after {$timeout} s)"];
            }
            usleep(20000);
        }
    }
}
