<?php

declare(strict_types=1);

namespace CometBox\Transport;

use CometBox\Exception\InvalidArgument;
use CometBox\Exception\Unavailable;

/**
 * The cometbox PHP extension (php-ext/, `extension=cometbox.so`): HTTP/1.1
 * written and read in Rust over one keep-alive connection per PHP worker and
 * address, reused by every request the worker serves (PHP-FPM, mod_php).
 * TCP (http://) or a Unix socket; not https.
 *
 * Unlike the other transports it sends no `Connection: close`. What the
 * extension may retry, and what it reports, is in php-ext/README.md: a
 * request is resent only when none of its bytes left (an idle connection the
 * server had closed); once sent, a missing reply is `timeout` or
 * `connection-lost` (Unavailable, not safe to retry), as with the others.
 *
 * The connect timeout bounds a new connection; the timeout bounds the whole
 * request.
 */
final class NativeTransport implements Transport
{
    /** The extension's name, as extension_loaded() knows it. */
    public const EXTENSION = 'cometbox';

    /** @var Endpoint */
    private $endpoint;

    /** @var string tcp:host:port or unix:/path */
    private $address;

    /** @var float */
    private $connectTimeout;

    /** @var float */
    private $timeout;

    /** @var string */
    private $userAgent;

    /** True when the extension is loaded and can serve $endpoint (http or unix). */
    public static function canServe(Endpoint $endpoint, ?bool $loaded = null): bool
    {
        return ($loaded ?? extension_loaded(self::EXTENSION)) && $endpoint->scheme !== 'https';
    }

    /**
     * @throws InvalidArgument when the extension is not loaded or the URL is https://
     */
    public function __construct(Endpoint $endpoint, float $connectTimeout, float $timeout, string $userAgent)
    {
        if (!extension_loaded(self::EXTENSION)) {
            throw new InvalidArgument("the 'native' transport needs the cometbox PHP extension (php-ext/; extension=cometbox.so), which is not loaded");
        }
        if ($endpoint->scheme === 'https') {
            throw new InvalidArgument("the 'native' transport speaks plain HTTP over TCP or a Unix socket; use 'curl' or 'socket' for https://");
        }
        $this->endpoint = $endpoint;
        if ($endpoint->isUnix()) {
            $this->address = 'unix:' . $endpoint->socketPath;
        } else {
            $host = strpos($endpoint->host, ':') !== false ? '[' . $endpoint->host . ']' : $endpoint->host;
            $this->address = 'tcp:' . $host . ':' . $endpoint->port;
        }
        $this->connectTimeout = min($connectTimeout, $timeout);
        $this->timeout = $timeout;
        $this->userAgent = $userAgent . ' ext-cometbox/' . (string) phpversion(self::EXTENSION);
    }

    public function name(): string
    {
        return 'native';
    }

    public function request(string $method, string $path, array $headers, ?string $body): Response
    {
        $all = [
            'Host' => $this->endpoint->hostHeader(),
            'User-Agent' => $this->userAgent,
        ] + $headers;
        $reply = \cometbox_native_request(
            $this->address,
            $method,
            $this->endpoint->target($path),
            $all,
            $body,
            $this->connectTimeout,
            $this->timeout
        );
        if (isset($reply['error'])) {
            // Same codes, and so the same isSafeToRetry(), as the other transports.
            throw new Unavailable((string) $reply['message'], (string) $reply['error']);
        }
        return new Response((int) $reply['status'], $reply['headers'], (string) $reply['body']);
    }
}
