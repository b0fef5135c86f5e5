<?php

/**
 * Minimal PSR-4 autoloader for using the cometbox client without Composer:
 *
 *     require '/path/to/php-client/autoload.php';
 *     $client = new CometBox\Client('http://127.0.0.1:8481');
 *
 * With Composer, use vendor/autoload.php instead (this file is not needed).
 */

spl_autoload_register(static function (string $class): void {
    $prefix = 'CometBox\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $relative = substr($class, strlen($prefix));
    if (strpos($relative, 'Tests\\') === 0) {
        return; // the test classes are autoloaded by tests/bootstrap.php only
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', $relative) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
