<?php

declare(strict_types=1);

namespace CometBox;

use CometBox\Exception\InvalidArgument;

/**
 * Mints the HS256 JSON Web Tokens that browsers present to /poll, with
 * nothing but hash_hmac(). Client::token() uses it when a secret is
 * configured.
 */
final class Jwt
{
    /**
     * A browser token for $clientId: claims `sub`, `iat`, `exp` = iat + ttl,
     * and `channels` when not empty (channel names or prefixes ending in `*`
     * that the page may subscribe to with /poll?channels=...).
     *
     * @param string[] $channels
     * @param int|null $now Unix time to use instead of time() (tests)
     * @throws InvalidArgument
     */
    public static function mint(string $secret, string $clientId, int $ttl = 3600, array $channels = [], ?int $now = null): string
    {
        if ($secret === '') {
            throw new InvalidArgument('the token secret is empty');
        }
        $iat = $now ?? time();
        $claims = ['sub' => $clientId, 'iat' => $iat, 'exp' => $iat + $ttl];
        if ($channels !== []) {
            $claims['channels'] = array_values(array_map('strval', $channels));
        }
        return self::encode($claims, $secret);
    }

    /**
     * Signs any claims with HS256.
     *
     * @param array<string, mixed> $claims
     * @throws InvalidArgument
     */
    public static function encode(array $claims, string $secret): string
    {
        $header = ['alg' => 'HS256', 'typ' => 'JWT'];
        try {
            $signingInput = self::base64Url(json_encode($header, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES))
                . '.' . self::base64Url(json_encode($claims, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE));
        } catch (\JsonException $e) {
            throw new InvalidArgument('token claims cannot be JSON-encoded: ' . $e->getMessage(), $e);
        }
        return $signingInput . '.' . self::base64Url(hash_hmac('sha256', $signingInput, $secret, true));
    }

    /**
     * Reads the claims of a token WITHOUT checking its signature (for
     * display and tests; the server is what verifies tokens).
     *
     * @return array<string, mixed>|null
     */
    public static function claims(string $token): ?array
    {
        $parts = explode('.', $token);
        if (count($parts) !== 3) {
            return null;
        }
        $json = base64_decode(strtr($parts[1], '-_', '+/'), true);
        if ($json === false) {
            return null;
        }
        $claims = json_decode($json, true);
        return is_array($claims) ? $claims : null;
    }

    private static function base64Url(string $bytes): string
    {
        return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
    }
}
