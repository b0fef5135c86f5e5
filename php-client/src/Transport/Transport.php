<?php

declare(strict_types=1);

namespace CometBox\Transport;

use CometBox\Exception\Unavailable;

/**
 * Sends one HTTP/1.1 request and returns the reply, whatever its status.
 *
 * Implementations add Host, Content-Length, User-Agent and
 * `Connection: close`; they throw Unavailable for connection failures and
 * timeouts, never for an HTTP status.
 */
interface Transport
{
    /**
     * @param string $method 'GET' or 'POST'
     * @param string $path   starts with '/', already percent-encoded
     * @param array<string, string> $headers extra request headers
     * @throws Unavailable
     */
    public function request(string $method, string $path, array $headers, ?string $body): Response;

    /** 'socket', 'curl' or 'stream' (or a custom name). */
    public function name(): string;
}
