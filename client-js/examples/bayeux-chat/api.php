<?php
/**
 * The Bayeux chat demo's backend: the page's only call into it is logging in.
 *
 *   GET  api.php?action=config         -> {"bayeux": "<cometbox Bayeux URL as the browser sees it>"}
 *   POST api.php?action=login  {name}  -> {clientId, name, token}
 *
 * Everything else goes through Bayeux: the page hands the token to CometD's
 * handshake (`ext.cometbox.token`), subscribes to /chat/demo and publishes
 * there. Whether a publish is allowed, and who said it, is decided by
 * hook.php (cometbox's `publish` hook), not by the page: the token grants
 * subscriptions under /chat/ and no publish claim.
 *
 * Environment (optional; named CHAT_*, the sidecar reads COMETBOX_* itself):
 *   CHAT_INGEST_URL     the sidecar's ingest listener (default http://127.0.0.1:8481)
 *   CHAT_INGEST_KEY     the ingest key, if configured
 *   CHAT_TOKEN_SECRET   the sidecar's auth secret: tokens are then minted here
 *                       instead of through POST /token
 *   CHAT_COMETBOX_URL   the sidecar's public listener as the browser sees it
 *                       (default http://127.0.0.1:8480); the page talks to <it>/bayeux
 */

declare(strict_types=1);

require __DIR__ . '/../../../php-client/autoload.php';

const TOKEN_TTL = 3600; // seconds: a re-handshake (after a sidecar restart) reuses the token

header('Content-Type: application/json; charset=utf-8');
header('Cache-Control: no-store');

function env(string $name, ?string $default = null): ?string
{
    $v = getenv($name);
    return ($v === false || $v === '') ? $default : $v;
}

function reply(int $status, array $body): void
{
    http_response_code($status);
    echo json_encode($body, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    exit;
}

$action = $_GET['action'] ?? '';
try {
    switch ($action) {
        case 'config':
            reply(200, ['bayeux' => rtrim(env('CHAT_COMETBOX_URL', 'http://127.0.0.1:8480'), '/') . '/bayeux']);

        case 'login':
            if (($_SERVER['REQUEST_METHOD'] ?? 'GET') !== 'POST') {
                reply(405, ['error' => 'use POST']);
            }
            $in = json_decode((string) file_get_contents('php://input'), true);
            $name = trim(preg_replace('/\s+/u', ' ', (string) (is_array($in) ? ($in['name'] ?? '') : '')));
            if ($name === '' || preg_match_all('/./su', $name) > 32) {
                reply(400, ['error' => 'Pick a name of 1 to 32 characters.']);
            }
            // Client ids match [A-Za-z0-9_.:@-]{1,128}: a readable part plus a random part.
            $slug = trim(substr(preg_replace('/[^A-Za-z0-9_.-]+/', '-', $name), 0, 40), '-');
            $clientId = 'chat:' . ($slug === '' ? 'guest' : $slug) . '@' . bin2hex(random_bytes(6));
            $cometbox = new CometBox\Client(env('CHAT_INGEST_URL', 'http://127.0.0.1:8481'), [
                'key' => env('CHAT_INGEST_KEY'),
                'secret' => env('CHAT_TOKEN_SECRET'),
            ]);
            reply(200, [
                'clientId' => $clientId,
                'name' => $name,
                'token' => $cometbox->token($clientId, TOKEN_TTL, ['/chat/*']),
            ]);

        default:
            reply(404, ['error' => 'unknown action']);
    }
} catch (CometBox\Exception\CometBoxException $e) {
    error_log('cometbox: ' . $e->getMessage());
    reply(502, ['error' => 'cometbox: ' . $e->getMessage()]);
}
