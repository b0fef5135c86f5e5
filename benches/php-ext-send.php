<?php

/**
 * Time and CPU per `send` from PHP, one transport against one server:
 *
 *   php [-d extension=cometbox.so] benches/php-ext-send.php URL KEY TRANSPORT COUNT SERVER_PID
 *
 * Sends COUNT messages (after 200 not counted, to warm up) with a new
 * CometBox\Client per send, as a web page would. Prints one line:
 * wall µs per send, this PHP process's CPU µs per send (user+sys,
 * getrusage), the server's CPU µs per send (/proc/SERVER_PID/stat). Part of
 * benches/php-ext.sh; a benchmark, never a test: it asserts nothing.
 */

declare(strict_types=1);

require dirname(__DIR__) . '/php-client/autoload.php';

[$self, $url, $key, $transport, $count, $serverPid] = $argv;
$count = (int) $count;

function cpu_us(): float
{
    $r = getrusage();
    return $r['ru_utime.tv_sec'] * 1e6 + $r['ru_utime.tv_usec'] + $r['ru_stime.tv_sec'] * 1e6 + $r['ru_stime.tv_usec'];
}

function server_cpu_us(string $pid): float
{
    $stat = (string) file_get_contents("/proc/$pid/stat");
    $fields = explode(' ', substr($stat, strrpos($stat, ')') + 2));
    // utime and stime are fields 14 and 15 (11 and 12 after the command).
    return ((int) $fields[11] + (int) $fields[12]) * 1e6 / 100; // USER_HZ = 100 on Linux
}

$send = static function (int $i) use ($url, $key, $transport): void {
    $client = new CometBox\Client($url, ['key' => $key, 'transport' => $transport]);
    $client->send('bench-' . ($i % 50), ['n' => $i, 'text' => 'Your export is ready']);
};
for ($i = 0; $i < 200; $i++) {
    $send($i);
}
$wall0 = hrtime(true);
$cpu0 = cpu_us();
$srv0 = server_cpu_us($serverPid);
for ($i = 0; $i < $count; $i++) {
    $send($i);
}
$wall = (hrtime(true) - $wall0) / 1e3;
$cpu = cpu_us() - $cpu0;
$srv = server_cpu_us($serverPid) - $srv0;
$name = (new CometBox\Client($url, ['transport' => $transport]))->transportName();
printf(
    "send: transport=%-6s via=%-4s count=%d wall_us_per_send=%.1f php_cpu_us_per_send=%.1f server_cpu_us_per_send=%.1f\n",
    $name,
    strncmp($url, 'unix:', 5) === 0 ? 'unix' : 'tcp',
    $count,
    $wall / $count,
    $cpu / $count,
    $srv / $count
);
