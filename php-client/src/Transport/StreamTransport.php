<?php

declare(strict_types=1);

namespace CometBox\Transport;

use CometBox\Exception\InvalidArgument;
use CometBox\Exception\Unavailable;

/**
 * PHP's own http:// stream wrapper (fopen with a stream context); needs
 * allow_url_fopen=On. http:// and https:// only: the wrapper cannot speak
 * over a Unix socket, so constructing it for a unix:// endpoint throws
 * InvalidArgument (it never falls back silently; use 'socket' or 'curl').
 *
 * The wrapper has a single timeout that bounds the connection and each read
 * (not the whole request as with the other transports); connect_timeout is
 * not used separately.
 */
final class StreamTransport implements Transport
{
    /** @var Endpoint */
    private $endpoint;

    /** @var float */
    private $timeout;

    /** @var string */
    private $userAgent;

    public function __construct(Endpoint $endpoint, float $connectTimeout, float $timeout, string $userAgent)
    {
        if ($endpoint->isUnix()) {
            throw new InvalidArgument(
                "transport 'stream' cannot reach a Unix socket (PHP's http:// wrapper only speaks TCP); "
                . "use 'socket' or 'curl' for " . $endpoint->describe()
            );
        }
        if (!filter_var(ini_get('allow_url_fopen'), FILTER_VALIDATE_BOOLEAN)) {
            throw new InvalidArgument("transport 'stream' needs allow_url_fopen=On");
        }
        $this->endpoint = $endpoint;
        $this->timeout = $timeout;
        $this->userAgent = $userAgent;
    }

    public function name(): string
    {
        return 'stream';
    }

    public function request(string $method, string $path, array $headers, ?string $body): Response
    {
        $e = $this->endpoint;
        $headerText = 'Connection: close' . "\r\n";
        foreach ($headers as $name => $value) {
            $headerText .= $name . ': ' . $value . "\r\n";
        }
        $http = [
            'method' => $method,
            'header' => $headerText,
            'user_agent' => $this->userAgent,
            'protocol_version' => 1.1,
            'timeout' => $this->timeout,
            'ignore_errors' => true,
            'follow_location' => 0,
            'max_redirects' => 1,
        ];
        if ($body !== null) {
            $http['content'] = $body;
        }
        // Whether the TCP connection was made decides whether a failed request
        // may be retried: the wrapper reports it with STREAM_NOTIFY_CONNECT
        // (sent once the transport is connected, before any byte of the
        // request is written). No connect notification means nothing reached
        // the server. The wording of PHP's warning is not used for this: it
        // varies with the PHP version and with the locale (strerror).
        $connected = false;
        $context = stream_context_create(['http' => $http], [
            'notification' => static function (int $code) use (&$connected): void {
                if ($code === STREAM_NOTIFY_CONNECT) {
                    $connected = true;
                }
            },
        ]);

        $warning = null;
        set_error_handler(static function (int $no, string $str) use (&$warning): bool {
            $warning = $str;
            return true;
        });
        $start = microtime(true);
        try {
            $fp = fopen($e->url($path), 'rb', false, $context);
            if ($fp === false) {
                $elapsed = microtime(true) - $start;
                $why = (string) $warning;
                if (!$connected) {
                    throw new Unavailable(
                        sprintf('cannot connect to cometbox at %s: %s', $e->describe(), $why),
                        'connection-failed'
                    );
                }
                if ($elapsed >= $this->timeout * 0.9) {
                    throw new Unavailable(
                        sprintf('no complete reply from cometbox at %s within %.3g s: %s', $e->describe(), $this->timeout, $why),
                        'timeout'
                    );
                }
                throw new Unavailable(
                    sprintf('request to cometbox at %s failed: %s', $e->describe(), $why),
                    'connection-lost'
                );
            }
            try {
                $meta = stream_get_meta_data($fp);
                $content = stream_get_contents($fp);
                $after = stream_get_meta_data($fp);
                if ($after['timed_out']) {
                    throw new Unavailable(
                        sprintf('no complete reply from cometbox at %s within %.3g s', $e->describe(), $this->timeout),
                        'timeout'
                    );
                }
                if ($content === false) {
                    throw new Unavailable(
                        sprintf('connection to cometbox at %s lost while reading the reply', $e->describe()),
                        'connection-lost'
                    );
                }
            } finally {
                fclose($fp);
            }
        } finally {
            restore_error_handler();
        }

        // wrapper_data holds the header lines of every response received
        // (interim ones included): keep the last status line and what follows.
        $lines = isset($meta['wrapper_data']) && is_array($meta['wrapper_data']) ? $meta['wrapper_data'] : [];
        $status = 0;
        $headerLines = [];
        foreach ($lines as $line) {
            if (preg_match('#^HTTP/\S+\s+(\d{3})#', (string) $line, $m)) {
                $status = (int) $m[1];
                $headerLines = [];
            } else {
                $headerLines[] = (string) $line;
            }
        }
        if ($status === 0) {
            throw new Unavailable(
                sprintf('invalid HTTP reply from cometbox at %s', $e->describe()),
                'connection-lost'
            );
        }
        return new Response($status, Response::parseHeaderLines($headerLines), $content);
    }
}
