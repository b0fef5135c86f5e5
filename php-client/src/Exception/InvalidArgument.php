<?php

declare(strict_types=1);

namespace CometBox\Exception;

/**
 * Raised by the client itself, before anything is sent: a bad option or URL,
 * a payload that cannot be JSON-encoded, or a string that XML 1.0 cannot
 * carry (invalid UTF-8; control characters other than tab, newline and
 * carriage return; U+FFFE, U+FFFF) in an id, channel, event name or
 * pre-encoded JSON. Error code `invalid-argument`, HTTP status 0.
 */
class InvalidArgument extends CometBoxException
{
    public function __construct(string $message, ?\Throwable $previous = null)
    {
        parent::__construct($message, 'invalid-argument', 0, [], $previous);
    }
}
