<?php
/**
 * The chat demo's backend: a few JSON endpoints that use the cometbox PHP client.
 *
 *   GET  api.php?action=config          -> {"cometbox": "<public URL of the sidecar>"}
 *   POST api.php?action=login   {name}  -> {clientId, name, auth, token}
 *   POST api.php?action=token   {auth}  -> {token}          (the page's getToken())
 *   POST api.php?action=send    {auth, text} -> {ok: true}
 *   POST api.php?action=logout  {auth}  -> {ok: true}
 *
 * The page never talks to the ingest port: only this backend does. Each tab is
 * its own user: the page keeps `auth` (an HMAC of its client id and name, made
 * with a key only this backend knows) in sessionStorage, so two tabs of one
 * browser can chat with each other.
 *
 * Environment (all optional; named CHAT_*, apart from the sidecar's COMETBOX_* variables):
 *   CHAT_INGEST_URL     ingest listener (default http://127.0.0.1:8481)
 *   CHAT_INGEST_KEY     ingest key, if configured
 *   CHAT_TOKEN_SECRET   the sidecar's auth secret: tokens are then minted here
 *                       instead of through POST /token
 *   CHAT_COMETBOX_URL   the sidecar as the browser sees it (default http://127.0.0.1:8480)
 *   CHAT_HOOK_SECRET    the sidecar's hooks.secret, when its hooks.url is this
 *                       demo's hook.php: joins and leaves are then announced
 *                       by the hook (from online/offline), not here, and
 *                       tokens also grant the rooms chat:* (hook.php decides)
 */

declare(strict_types=1);

require __DIR__ . '/../../../php-client/autoload.php';

const CHANNEL = 'chat';
const TOKEN_TTL = 600; // seconds; the page asks for a new one through getToken() when it expires

/** With hooks (hook.php), presence comes from the sidecar's online/offline events. */
function hooked(): bool
{
    return env('CHAT_HOOK_SECRET') !== null;
}

/** What a token grants: the room, and with hooks every chat:* room (hook.php says who may join). */
function grants(): array
{
    return hooked() ? [CHANNEL, CHANNEL . ':*'] : [CHANNEL];
}

header('Content-Type: application/json; charset=utf-8');
header('Cache-Control: no-store');

function env(string $name, ?string $default = null): ?string
{
    $v = getenv($name);
    return ($v === false || $v === '') ? $default : $v;
}

/** Length in characters (mbstring is not always installed). */
function ulen(string $s): int
{
    $n = preg_match_all('/./su', $s);
    return $n === false ? strlen($s) : $n;
}

function reply(int $status, array $body): void
{
    http_response_code($status);
    echo json_encode($body, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    exit;
}

function input(): array
{
    $raw = file_get_contents('php://input');
    $json = json_decode($raw === false ? '' : $raw, true);
    return is_array($json) ? $json : $_POST;
}

/** A per-installation random key for the demo's `auth` values, kept beside the system temp files. */
function demoKey(): string
{
    $file = sys_get_temp_dir() . '/cometbox-chat-demo.key';
    $key = @file_get_contents($file);
    if (!is_string($key) || strlen($key) < 32) {
        $key = bin2hex(random_bytes(32));
        file_put_contents($file, $key, LOCK_EX);
        @chmod($file, 0600);
    }
    return $key;
}

function sign(string $clientId, string $name): string
{
    return $clientId . '.' . hash_hmac('sha256', $clientId . "\n" . $name, demoKey());
}

/** The user behind an `auth` value, or a 401. */
function user(array $in): array
{
    $auth = (string) ($in['auth'] ?? '');
    $name = (string) ($in['name'] ?? '');
    $dot = strrpos($auth, '.');
    $clientId = $dot === false ? '' : substr($auth, 0, $dot);
    if ($clientId === '' || !hash_equals(sign($clientId, $name), $auth)) {
        reply(401, ['error' => 'not-logged-in']);
    }
    return [$clientId, $name];
}

function cometbox(): CometBox\Client
{
    return new CometBox\Client(env('CHAT_INGEST_URL', 'http://127.0.0.1:8481'), [
        'key' => env('CHAT_INGEST_KEY'),
        'secret' => env('CHAT_TOKEN_SECRET'),
    ]);
}

$action = $_GET['action'] ?? '';
if ($action !== 'config' && ($_SERVER['REQUEST_METHOD'] ?? 'GET') !== 'POST') {
    reply(405, ['error' => 'use POST']);
}

try {
    switch ($action) {
        case 'config':
            reply(200, ['cometbox' => rtrim(env('CHAT_COMETBOX_URL', 'http://127.0.0.1:8480'), '/')]);

        case 'login':
            $in = input();
            $name = trim(preg_replace('/\s+/u', ' ', (string) ($in['name'] ?? '')));
            if ($name === '' || ulen($name) > 32) {
                reply(400, ['error' => 'Pick a name of 1 to 32 characters.']);
            }
            // Client ids match [A-Za-z0-9_.:@-]{1,128}: a readable part plus a random part.
            $slug = substr(preg_replace('/[^A-Za-z0-9_.-]+/', '-', $name), 0, 40);
            $clientId = 'chat:' . trim($slug, '-') . '@' . bin2hex(random_bytes(6));
            $cb = cometbox();
            $batch = $cb->batch()->subscribe($clientId, CHANNEL);
            if (!hooked()) {
                $batch->publish(CHANNEL, ['name' => $name, 'id' => $clientId, 'what' => 'joined'], 'presence');
            }
            $batch->commit();
            reply(200, [
                'clientId' => $clientId,
                'name' => $name,
                'auth' => sign($clientId, $name),
                'token' => $cb->token($clientId, TOKEN_TTL, grants()),
            ]);

        case 'token':
            [$clientId] = user(input());
            reply(200, ['token' => cometbox()->token($clientId, TOKEN_TTL, grants())]);

        case 'send':
            $in = input();
            [$clientId, $name] = user($in);
            $text = trim((string) ($in['text'] ?? ''));
            if ($text === '' || ulen($text) > 2000) {
                reply(400, ['error' => 'A message has 1 to 2000 characters.']);
            }
            cometbox()->publish(CHANNEL, ['from' => $name, 'id' => $clientId, 'text' => $text], 'chat');
            reply(200, ['ok' => true]);

        case 'logout':
            [$clientId, $name] = user(input());
            $batch = cometbox()->batch();
            if (!hooked()) {
                $batch->publish(CHANNEL, ['name' => $name, 'id' => $clientId, 'what' => 'left'], 'presence');
            }
            $batch->disconnect($clientId)->commit();
            reply(200, ['ok' => true]);

        default:
            reply(404, ['error' => 'unknown action']);
    }
} catch (CometBox\Exception\CometBoxException $e) {
    error_log('cometbox: ' . $e->getMessage());
    reply(502, ['error' => 'cometbox: ' . $e->getMessage()]);
}
