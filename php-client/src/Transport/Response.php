<?php

declare(strict_types=1);

namespace CometBox\Transport;

/**
 * One HTTP reply: status, headers (names lower-cased; repeated headers joined
 * with ", "), and the body with any transfer encoding removed.
 */
final class Response
{
    /** @var int */
    public $status;

    /** @var array<string, string> */
    public $headers;

    /** @var string */
    public $body;

    /**
     * @param array<string, string> $headers
     */
    public function __construct(int $status, array $headers, string $body)
    {
        $this->status = $status;
        $this->headers = $headers;
        $this->body = $body;
    }

    public function header(string $name): ?string
    {
        return $this->headers[strtolower($name)] ?? null;
    }

    /**
     * Parses header lines ("Name: value"), ignoring anything else.
     *
     * @param string[] $lines
     * @return array<string, string>
     */
    public static function parseHeaderLines(array $lines): array
    {
        $headers = [];
        foreach ($lines as $line) {
            $colon = strpos($line, ':');
            if ($colon === false || $colon === 0) {
                continue;
            }
            $name = strtolower(trim(substr($line, 0, $colon)));
            $value = trim(substr($line, $colon + 1));
            $headers[$name] = isset($headers[$name]) ? $headers[$name] . ', ' . $value : $value;
        }
        return $headers;
    }
}
