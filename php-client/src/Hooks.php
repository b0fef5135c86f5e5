<?php

declare(strict_types=1);

namespace CometBox;

use CometBox\Exception\SignatureError;

/**
 * Answering cometbox's backend hooks (the server's `[hooks]` section).
 *
 * cometbox POSTs one JSON event per request to your hook URL, signed in a
 * header `Cometbox-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
 * "<t>.<body>" with hooks.secret>`. A whole hook script:
 *
 *     require 'vendor/autoload.php';
 *     CometBox\Hooks::receive(getenv('COMETBOX_HOOKS__SECRET'), function (array $event) {
 *         if ($event['type'] === 'subscribe' && $event['channel'] === 'room:staff') {
 *             return CometBox\Hooks::deny('staff only');
 *         }
 *         return CometBox\Hooks::allow();
 *     });
 *
 * Cancellable events (`connect`, `subscribe`, `publish`) wait for the
 * answer; notifications (`online`, `offline`, `subscribed`, `unsubscribed`)
 * need only a 200 and may arrive more than once: drop repeats by
 * `$event['id']`.
 */
final class Hooks
{
    public const HEADER = 'Cometbox-Signature';
    public const CANCELLABLE = ['connect', 'subscribe', 'publish'];

    /**
     * Checks a hook request's signature and returns its event (the decoded
     * JSON object: id, type, client, channel, ts, node, and data/ext when
     * present).
     *
     * @param string      $body      the raw request body, exactly as received
     * @param string|null $header    the Cometbox-Signature header
     * @param string      $secret    the server's hooks.secret
     * @param int         $tolerance seconds the signature's time may be off
     *                               from now, either way (older is a replay)
     * @param int|null    $now       unix seconds to compare with (tests)
     * @return array<string, mixed>
     * @throws SignatureError
     */
    public static function verify(string $body, ?string $header, string $secret, int $tolerance = 300, ?int $now = null): array
    {
        if ($secret === '') {
            throw new \InvalidArgumentException('the hook secret must not be empty');
        }
        [$t, $candidates] = self::parseHeader($header);
        $now = $now ?? time();
        if (abs($now - $t) > $tolerance) {
            throw new SignatureError(
                sprintf('the signature is %+d s from now, over the %d s tolerance', $now - $t, $tolerance),
                'stale-signature',
                401
            );
        }
        $expected = hash_hmac('sha256', $t . '.' . $body, $secret);
        $matched = false;
        foreach ($candidates as $candidate) {
            // Every candidate is compared, in constant time.
            $matched = hash_equals($expected, strtolower($candidate)) || $matched;
        }
        if (!$matched) {
            throw new SignatureError('no v1 signature matches the body and secret', 'bad-signature', 401);
        }
        $event = json_decode($body, true);
        if (!is_array($event) || !is_string($event['id'] ?? null) || !is_string($event['type'] ?? null)) {
            throw new SignatureError('the hook body is not an event object', 'invalid-body', 400);
        }
        return $event;
    }

    /** The answer that lets the action happen: {"allow":true}. */
    public static function allow(): string
    {
        return '{"allow":true}';
    }

    /**
     * Lets a `publish` happen with `$data` instead of what the browser sent.
     *
     * @param mixed $data
     */
    public static function allowWith($data): string
    {
        return (string) json_encode(['allow' => true, 'data' => $data], JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    }

    /** The answer that refuses it; the browser gets `$reason` (a poll: 403 `denied`). */
    public static function deny(string $reason = ''): string
    {
        return (string) json_encode(['allow' => false, 'reason' => $reason], JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    }

    /**
     * Serves one hook request in a PHP script: verifies it, calls
     * `$handler($event)` and writes its answer (a string from allow() or
     * deny(); null for notifications is answered {"allow":true}). A request
     * that fails verification gets 401 (400 for a bad body) and the handler
     * is not called.
     *
     * @param callable(array<string, mixed>): ?string $handler
     */
    public static function receive(string $secret, callable $handler, int $tolerance = 300): void
    {
        header('Content-Type: application/json');
        try {
            $event = self::verify(
                (string) file_get_contents('php://input'),
                $_SERVER['HTTP_COMETBOX_SIGNATURE'] ?? null,
                $secret,
                $tolerance
            );
        } catch (SignatureError $e) {
            http_response_code($e->getHttpStatus());
            echo json_encode(['error' => $e->getErrorCode(), 'message' => $e->getMessage()]);
            return;
        }
        echo $handler($event) ?? self::allow();
    }

    /**
     * @return array{0: int, 1: list<string>}
     */
    private static function parseHeader(?string $header): array
    {
        if ($header === null || $header === '' || strlen($header) > 4096) {
            throw new SignatureError('no ' . self::HEADER . ' header', 'malformed-signature', 401);
        }
        $t = [];
        $v1 = [];
        foreach (explode(',', $header) as $item) {
            $pair = explode('=', trim($item), 2);
            if (count($pair) !== 2) {
                throw new SignatureError('the signature header is not name=value pairs', 'malformed-signature', 401);
            }
            [$name, $value] = [trim($pair[0]), trim($pair[1])];
            if ($name === 't') {
                $t[] = $value;
            } elseif ($name === 'v1') {
                if (!preg_match('/\A[0-9a-fA-F]{64}\z/', $value)) {
                    throw new SignatureError('a v1 signature is not 64 hex digits', 'malformed-signature', 401);
                }
                $v1[] = $value;
            }
        }
        if (count($t) !== 1 || !preg_match('/\A[0-9]{1,12}\z/', $t[0]) || $v1 === []) {
            throw new SignatureError('the signature header needs one t=<unix seconds> and a v1=', 'malformed-signature', 401);
        }
        return [(int) $t[0], $v1];
    }
}
