<?php

declare(strict_types=1);

namespace CometBox\Transport;

use CometBox\Exception\InvalidArgument;
use CometBox\Exception\Unavailable;

/**
 * ext-curl: http://, https:// and Unix sockets (CURLOPT_UNIX_SOCKET_PATH).
 * Proxies from the environment (http_proxy, ...) are ignored: the ingest
 * port is local. The timeout bounds the whole request.
 */
final class CurlTransport implements Transport
{
    /** @var Endpoint */
    private $endpoint;

    /** @var float */
    private $connectTimeout;

    /** @var float */
    private $timeout;

    /** @var string */
    private $userAgent;

    public function __construct(Endpoint $endpoint, float $connectTimeout, float $timeout, string $userAgent)
    {
        if (!extension_loaded('curl')) {
            throw new InvalidArgument("transport 'curl' needs the curl extension, which is not loaded");
        }
        if ($endpoint->isUnix() && !defined('CURLOPT_UNIX_SOCKET_PATH')) {
            throw new InvalidArgument('this curl build has no CURLOPT_UNIX_SOCKET_PATH (curl >= 7.40 is needed for Unix sockets)');
        }
        $this->endpoint = $endpoint;
        $this->connectTimeout = $connectTimeout;
        $this->timeout = $timeout;
        $this->userAgent = $userAgent;
    }

    public function name(): string
    {
        return 'curl';
    }

    public function request(string $method, string $path, array $headers, ?string $body): Response
    {
        $e = $this->endpoint;
        // Large bodies go with `Expect: 100-continue`, so that a server
        // refusing them (413) can answer before the body is sent; small ones
        // without (no extra round trip).
        $headerLines = ['Connection: close'];
        $headerLines[] = $body !== null && strlen($body) > SocketTransport::EXPECT_CONTINUE_ABOVE ? 'Expect: 100-continue' : 'Expect:';
        foreach ($headers as $name => $value) {
            $headerLines[] = $name . ': ' . $value;
        }
        $responseHeaders = [];
        $ch = curl_init();
        $options = [
            CURLOPT_URL => $e->url($path),
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_HEADER => false,
            CURLOPT_HTTPHEADER => $headerLines,
            CURLOPT_USERAGENT => $this->userAgent,
            CURLOPT_HTTP_VERSION => CURL_HTTP_VERSION_1_1,
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_PROXY => '',
            CURLOPT_NOSIGNAL => true,
            CURLOPT_CONNECTTIMEOUT_MS => max(1, (int) round(min($this->connectTimeout, $this->timeout) * 1000)),
            CURLOPT_TIMEOUT_MS => max(1, (int) round($this->timeout * 1000)),
            CURLOPT_HEADERFUNCTION => static function ($ch, string $line) use (&$responseHeaders): int {
                if (strncmp($line, 'HTTP/', 5) === 0) {
                    $responseHeaders = []; // a new (possibly interim) response begins
                } else {
                    $responseHeaders[] = rtrim($line, "\r\n");
                }
                return strlen($line);
            },
        ];
        if (defined('CURLOPT_PROTOCOLS') && defined('CURLPROTO_HTTP')) {
            $options[CURLOPT_PROTOCOLS] = CURLPROTO_HTTP | CURLPROTO_HTTPS;
        }
        if (defined('CURLOPT_EXPECT_100_TIMEOUT_MS')) {
            $options[CURLOPT_EXPECT_100_TIMEOUT_MS] = 1000;
        }
        if ($e->isUnix()) {
            $options[CURLOPT_UNIX_SOCKET_PATH] = $e->socketPath;
        }
        if ($method === 'GET') {
            $options[CURLOPT_HTTPGET] = true;
        } elseif ($method === 'POST') {
            $options[CURLOPT_POST] = true;
            $options[CURLOPT_POSTFIELDS] = (string) $body;
        } else {
            $options[CURLOPT_CUSTOMREQUEST] = $method;
            if ($body !== null) {
                $options[CURLOPT_POSTFIELDS] = $body;
            }
        }
        curl_setopt_array($ch, $options);
        $result = curl_exec($ch);
        $errno = curl_errno($ch);
        $error = curl_error($ch);
        $status = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        $connected = (float) curl_getinfo($ch, CURLINFO_CONNECT_TIME) > 0
            || (defined('CURLINFO_PRIMARY_PORT') && (int) curl_getinfo($ch, CURLINFO_PRIMARY_PORT) > 0 && $status > 0);
        if (PHP_VERSION_ID < 80000) {
            curl_close($ch);
        }
        unset($ch);

        if ($result === false || $errno !== 0) {
            // 6: could not resolve host, 7: could not connect; 28 before the
            // connection was made is a connect timeout.
            if ($errno === 6 || $errno === 7 || ($errno === 28 && !$connected)) {
                throw new Unavailable(
                    sprintf('cannot connect to cometbox at %s: %s', $e->describe(), $error),
                    'connection-failed'
                );
            }
            if ($errno === 28) {
                throw new Unavailable(
                    sprintf('no complete reply from cometbox at %s within %.3g s (%s)', $e->describe(), $this->timeout, $error),
                    'timeout'
                );
            }
            throw new Unavailable(
                sprintf('request to cometbox at %s failed: curl error %d: %s', $e->describe(), $errno, $error),
                'connection-lost'
            );
        }
        return new Response($status, Response::parseHeaderLines($responseHeaders), (string) $result);
    }
}
