<?php
/**
 * The Bayeux suite's hook receiver (cometbox `[hooks]`, docs/hooks.md), run
 * by the tests under `php -S` with BAYEUX_HOOK_SECRET and BAYEUX_HOOK_LOG.
 * It uses php-client's CometBox\Hooks as a backend would, and decides:
 *
 * - `connect`: refused when the handshake's ext carries
 *   `{"test": {"deny": "<reason>"}}`, allowed otherwise (with or without a token);
 * - `subscribe`: `/chat/secret` is refused ("secret room"), the rest allowed;
 * - `publish`: a `data.text` containing "forbidden" is refused
 *   ("forbidden word"); everything else, `/service/**` included, is allowed.
 *
 * Every verified event is appended to BAYEUX_HOOK_LOG as one JSON line, so
 * the tests can see what reached the backend (a `/service/**` publish must
 * reach it and nobody else).
 */

declare(strict_types=1);

require __DIR__ . '/../../../php-client/autoload.php';

use CometBox\Hooks;

$secret = (string) getenv('BAYEUX_HOOK_SECRET');
$log = (string) getenv('BAYEUX_HOOK_LOG');
if ($secret === '' || $log === '') {
    http_response_code(503);
    echo '{"error":"BAYEUX_HOOK_SECRET and BAYEUX_HOOK_LOG must be set"}';
    exit;
}

Hooks::receive($secret, function (array $event) use ($log): ?string {
    file_put_contents($log, json_encode($event, JSON_UNESCAPED_SLASHES) . "\n", FILE_APPEND | LOCK_EX);
    switch ($event['type']) {
        case 'connect':
            $reason = $event['ext']['test']['deny'] ?? null;
            return is_string($reason) ? Hooks::deny($reason) : Hooks::allow();
        case 'subscribe':
            return $event['channel'] === '/chat/secret' ? Hooks::deny('secret room') : Hooks::allow();
        case 'publish':
            $text = $event['data']['text'] ?? null;
            return is_string($text) && strpos($text, 'forbidden') !== false ? Hooks::deny('forbidden word') : Hooks::allow();
    }
    return null;
});
