<?php

declare(strict_types=1);

namespace CometBox\Exception;

/**
 * The server could not be reached or asked to come back later.
 *
 * Error codes:
 * - `connection-failed`: could not connect (refused, no such socket, connect
 *   timeout). Nothing was sent.
 * - `timeout`: connected and sent, but no complete reply within the timeout.
 *   The server MAY have applied the request.
 * - `connection-lost`: the connection broke while sending or reading.
 *   The server MAY have applied the request.
 * - `overloaded`, `shutting-down` (HTTP 503): nothing was applied.
 *
 * isSafeToRetry() tells whether the protocol guarantees nothing was applied.
 */
class Unavailable extends CometBoxException
{
    public function isSafeToRetry(): bool
    {
        return $this->getHttpStatus() === 503 || $this->getErrorCode() === 'connection-failed';
    }
}
