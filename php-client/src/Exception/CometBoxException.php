<?php

declare(strict_types=1);

namespace CometBox\Exception;

/**
 * Base class of every exception the cometbox client throws.
 *
 * - getErrorCode(): the server's error code (`invalid-json`, `unauthorized`,
 *   `overloaded`, ...) or one of the client's own codes (`connection-failed`,
 *   `timeout`, `connection-lost`, `invalid-argument`, `unexpected-response`).
 * - getHttpStatus(): the HTTP status of the reply, 0 when there was none.
 *   getCode() returns the same number.
 * - getDetails(): every attribute of the server's `<error>` element
 *   (e.g. ['code' => 'invalid-json', 'line' => '3']).
 */
class CometBoxException extends \RuntimeException
{
    /** @var string */
    private $errorCode;

    /** @var int */
    private $httpStatus;

    /** @var array<string, string> */
    private $details;

    /**
     * @param array<string, string> $details
     */
    public function __construct(
        string $message,
        string $errorCode,
        int $httpStatus = 0,
        array $details = [],
        ?\Throwable $previous = null
    ) {
        parent::__construct($message, $httpStatus, $previous);
        $this->errorCode = $errorCode;
        $this->httpStatus = $httpStatus;
        $this->details = $details;
    }

    public function getErrorCode(): string
    {
        return $this->errorCode;
    }

    public function getHttpStatus(): int
    {
        return $this->httpStatus;
    }

    /**
     * @return array<string, string>
     */
    public function getDetails(): array
    {
        return $this->details;
    }

    /**
     * The line of the request document the server pointed at (its `line`
     * attribute), or null.
     */
    public function getErrorLine(): ?int
    {
        if (isset($this->details['line']) && ctype_digit($this->details['line'])) {
            return (int) $this->details['line'];
        }
        return null;
    }
}
