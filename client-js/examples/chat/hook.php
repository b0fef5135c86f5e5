<?php
/**
 * The chat demo's hook receiver (cometbox `[hooks]`, docs/hooks.md), opt-in:
 * run the sidecar with COMETBOX_HOOKS__URL=http://127.0.0.1:8000/hook.php and
 * COMETBOX_HOOKS__SECRET, and php -S with CHAT_HOOK_SECRET set to the same
 * secret.
 *
 * - `online` / `offline`: announces who joins and leaves in the room (as a
 *   `presence` message on `chat`), so it follows the page's real presence:
 *   a closed tab leaves once its polls stop (hooks.offline_after), a
 *   reload does not leave and rejoin.
 * - `subscribe`: a page may ask for the room `chat:staff` (its token grants
 *   `chat:*`), but only names starting with "staff-" get in; the others get
 *   403 `denied` with the reason.
 * - everything else is allowed.
 *
 * Notifications arrive at least once: repeats are dropped by event id.
 */

declare(strict_types=1);

require __DIR__ . '/../../../php-client/autoload.php';

use CometBox\Hooks;

$secret = getenv('CHAT_HOOK_SECRET');
if ($secret === false || $secret === '') {
    http_response_code(503);
    echo '{"error":"CHAT_HOOK_SECRET is not set"}';
    exit;
}

/** Whether this event id was handled already (a retry); remembers it. */
function seen(string $id): bool
{
    $file = sys_get_temp_dir() . '/cometbox-chat-hook-ids';
    $fh = fopen($file, 'c+');
    flock($fh, LOCK_EX);
    $ids = array_filter(explode("\n", (string) stream_get_contents($fh)));
    $seen = in_array($id, $ids, true);
    if (!$seen) {
        $ids = array_slice(array_merge($ids, [$id]), -1000); // the last thousand are enough
        ftruncate($fh, 0);
        rewind($fh);
        fwrite($fh, implode("\n", $ids) . "\n");
    }
    flock($fh, LOCK_UN);
    fclose($fh);
    return $seen;
}

/** The display name in a demo client id: `chat:<name>@<random>`. */
function nameOf(string $clientId): string
{
    return preg_replace('/^chat:(.*)@[0-9a-f]+$/', '$1', $clientId);
}

Hooks::receive($secret, function (array $event): ?string {
    switch ($event['type']) {
        case 'subscribe':
            if ($event['channel'] === 'chat:staff' && strpos(nameOf($event['client']), 'staff-') !== 0) {
                return Hooks::deny('chat:staff is for staff only');
            }
            return Hooks::allow();
        case 'online':
        case 'offline':
            if (!seen($event['id'])) {
                $ingest = new CometBox\Client(getenv('CHAT_INGEST_URL') ?: 'http://127.0.0.1:8481', [
                    'key' => getenv('CHAT_INGEST_KEY') ?: null,
                ]);
                $what = $event['type'] === 'online' ? 'joined' : 'left';
                $ingest->publish('chat', ['name' => nameOf($event['client']), 'id' => $event['client'], 'what' => $what], 'presence');
            }
            return null;
    }
    return Hooks::allow();
});
