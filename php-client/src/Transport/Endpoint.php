<?php

declare(strict_types=1);

namespace CometBox\Transport;

use CometBox\Exception\InvalidArgument;

/**
 * Where the ingest listener is: `http://host:port[/prefix]`,
 * `https://host:port[/prefix]`, or a Unix socket written
 * `unix:///run/cometbox/ingest.sock` or `unix:/run/cometbox/ingest.sock`.
 */
final class Endpoint
{
    /** @var string 'http', 'https' or 'unix' */
    public $scheme;

    /** @var string host name or address, without brackets ('localhost' for unix) */
    public $host;

    /** @var int */
    public $port;

    /** @var string path prefix without trailing slash ('' for none) */
    public $basePath;

    /** @var string|null the socket path for unix */
    public $socketPath;

    private function __construct()
    {
    }

    public static function parse(string $url): self
    {
        $e = new self();
        if (strncasecmp($url, 'unix:', 5) === 0) {
            $path = substr($url, 5);
            if (strncmp($path, '//', 2) === 0) {
                $path = substr($path, 2); // unix:///run/x.sock -> /run/x.sock
            }
            if ($path === '' || strpos($path, "\0") !== false) {
                throw new InvalidArgument("invalid Unix socket address '$url'");
            }
            $e->scheme = 'unix';
            $e->host = 'localhost';
            $e->port = 0;
            $e->basePath = '';
            $e->socketPath = $path;
            return $e;
        }
        $parts = parse_url($url);
        if ($parts === false || !isset($parts['scheme'], $parts['host'])) {
            throw new InvalidArgument("invalid server URL '$url' (expected http://host:port or unix:///path)");
        }
        $scheme = strtolower($parts['scheme']);
        if ($scheme !== 'http' && $scheme !== 'https') {
            throw new InvalidArgument("unsupported URL scheme '$scheme' in '$url' (http, https or unix)");
        }
        if (isset($parts['user']) || isset($parts['query']) || isset($parts['fragment'])) {
            throw new InvalidArgument("the server URL '$url' must not hold credentials, a query or a fragment");
        }
        $e->scheme = $scheme;
        $e->host = trim($parts['host'], '[]');
        $e->port = isset($parts['port']) ? (int) $parts['port'] : ($scheme === 'https' ? 443 : 80);
        $e->basePath = rtrim($parts['path'] ?? '', '/');
        $e->socketPath = null;
        return $e;
    }

    public function isUnix(): bool
    {
        return $this->scheme === 'unix';
    }

    /** The Host header value. */
    public function hostHeader(): string
    {
        if ($this->isUnix()) {
            return 'localhost';
        }
        $host = strpos($this->host, ':') !== false ? '[' . $this->host . ']' : $this->host;
        $default = $this->scheme === 'https' ? 443 : 80;
        return $this->port === $default ? $host : $host . ':' . $this->port;
    }

    /** Absolute URL of $path (which starts with '/'); for unix, an http://localhost URL. */
    public function url(string $path): string
    {
        if ($this->isUnix()) {
            return 'http://localhost' . $path;
        }
        return $this->scheme . '://' . $this->hostHeader() . $this->basePath . $path;
    }

    /** The request target written on the request line. */
    public function target(string $path): string
    {
        return $this->basePath . $path;
    }

    /** What error messages name. */
    public function describe(): string
    {
        return $this->isUnix() ? 'unix:' . $this->socketPath : $this->scheme . '://' . $this->hostHeader() . $this->basePath;
    }
}
