<?php
/**
 * The Bayeux chat demo's hook receiver (cometbox `[hooks]`, docs/hooks.md):
 * run the sidecar with COMETBOX_HOOKS__URL=http://127.0.0.1:8000/hook.php and
 * COMETBOX_HOOKS__SECRET, and `php -S` with CHAT_HOOK_SECRET set to the same
 * secret.
 *
 * - `publish` (a page publishes with CometD): text containing a banned word
 *   is refused with a reason the page shows; otherwise the message is
 *   allowed with its payload replaced by {from, id, text}, so that the
 *   sender's name comes from its token, never from the page.
 * - `online` / `offline`: announces who joins and leaves (a `presence`
 *   message on /chat/demo through ingest). A page that leaves with
 *   /meta/disconnect, or stops connecting, goes offline.
 * - everything else (`connect`, `subscribe`) is allowed: the token already
 *   bounds what a page may subscribe to.
 *
 * Notifications arrive at least once: repeats are dropped by event id.
 */

declare(strict_types=1);

require __DIR__ . '/../../../php-client/autoload.php';

use CometBox\Hooks;

const ROOM = '/chat/demo';
const BANNED = ['spam'];

$secret = getenv('CHAT_HOOK_SECRET');
if ($secret === false || $secret === '') {
    http_response_code(503);
    echo '{"error":"CHAT_HOOK_SECRET is not set"}';
    exit;
}

/** Whether this event id was handled already (a retry); remembers it. */
function seen(string $id): bool
{
    $fh = fopen(sys_get_temp_dir() . '/cometbox-bayeux-chat-hook-ids', 'c+');
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
    return (string) preg_replace('/^chat:(.*)@[0-9a-f]+$/', '$1', $clientId);
}

Hooks::receive($secret, function (array $event): ?string {
    switch ($event['type']) {
        case 'publish':
            if ($event['channel'] !== ROOM) {
                return Hooks::deny('this demo only has the room ' . ROOM);
            }
            $text = trim((string) ($event['data']['text'] ?? ''));
            if ($text === '' || preg_match_all('/./su', $text) > 2000) {
                return Hooks::deny('a message has 1 to 2000 characters');
            }
            foreach (BANNED as $word) {
                if (preg_match('/\b' . preg_quote($word, '/') . '\b/iu', $text)) {
                    return Hooks::deny("the word \"$word\" is not allowed here");
                }
            }
            return Hooks::allowWith(['from' => nameOf($event['client']), 'id' => $event['client'], 'text' => $text]);
        case 'online':
        case 'offline':
            if (!seen($event['id'])) {
                $ingest = new CometBox\Client(getenv('CHAT_INGEST_URL') ?: 'http://127.0.0.1:8481', [
                    'key' => getenv('CHAT_INGEST_KEY') ?: null,
                ]);
                $what = $event['type'] === 'online' ? 'joined' : 'left';
                $ingest->publish(ROOM, ['name' => nameOf($event['client']), 'id' => $event['client'], 'what' => $what], 'presence');
            }
            return null;
    }
    return Hooks::allow();
});
