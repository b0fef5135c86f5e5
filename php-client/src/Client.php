<?php

declare(strict_types=1);

namespace CometBox;

use CometBox\Exception\CometBoxException;
use CometBox\Exception\InvalidArgument;
use CometBox\Exception\RequestRejected;
use CometBox\Exception\Unauthorized;
use CometBox\Exception\Unavailable;
use CometBox\Internal\Xml;
use CometBox\Transport\CurlTransport;
use CometBox\Transport\Endpoint;
use CometBox\Transport\NativeTransport;
use CometBox\Transport\Response;
use CometBox\Transport\SocketTransport;
use CometBox\Transport\StreamTransport;
use CometBox\Transport\Transport;

/**
 * Talks to the ingest listener of a cometbox server.
 *
 *     $client = new CometBox\Client('http://127.0.0.1:8481', ['key' => getenv('COMETBOX_INGEST__KEY')]);
 *     $client->send('alice', ['text' => 'Your export is ready'], 'notice');
 *
 * Every call is one short HTTP request: with the cometbox PHP extension
 * loaded (php-ext/), over the worker's persistent connection; otherwise one
 * connection per call (`Connection: close`). Failures throw a subclass of
 * CometBoxException, the same either way; nothing is retried unless
 * 'retries' is set.
 */
final class Client
{
    public const VERSION = '0.1.0';

    private const DEFAULTS = [
        'key' => null,            // ingest key, sent as Authorization: Bearer <key>
        'secret' => null,         // HS256 secret: token() mints locally instead of POST /token
        'transport' => 'auto',    // 'auto' | 'native' | 'curl' | 'socket' | 'stream' | a Transport instance
        'timeout' => 2.0,         // seconds for a whole request (see README for 'stream')
        'connect_timeout' => null, // seconds to connect; default: timeout
        'retries' => 0,           // extra attempts when nothing was applied (connect failure, 503)
        'retry_delay' => 0.2,     // seconds before the first retry, doubled each time
        'user_agent' => null,
    ];

    /** @var Endpoint */
    private $endpoint;

    /** @var Transport */
    private $transport;

    /** @var string|null */
    private $key;

    /** @var string|null */
    private $secret;

    /** @var int */
    private $retries;

    /** @var float */
    private $retryDelay;

    /**
     * @param string $url `http://host:port`, `https://host:port/prefix`,
     *                    `unix:///run/cometbox/ingest.sock` (or `unix:/run/...`)
     * @param array{key?: string|null, secret?: string|null, transport?: string|Transport,
     *              timeout?: float, connect_timeout?: float|null, retries?: int,
     *              retry_delay?: float, user_agent?: string|null} $options
     * @throws InvalidArgument on an unknown option, a bad value or URL, or a
     *                         transport that cannot serve the URL
     */
    public function __construct(string $url = 'http://127.0.0.1:8481', array $options = [])
    {
        $unknown = array_diff(array_keys($options), array_keys(self::DEFAULTS));
        if ($unknown !== []) {
            throw new InvalidArgument('unknown option(s): ' . implode(', ', $unknown)
                . ' (known: ' . implode(', ', array_keys(self::DEFAULTS)) . ')');
        }
        $o = $options + self::DEFAULTS;

        $this->endpoint = Endpoint::parse($url);
        $this->key = self::optionalString($o['key'], 'key');
        $this->secret = self::optionalString($o['secret'], 'secret');

        $timeout = self::positiveFloat($o['timeout'], 'timeout');
        $connectTimeout = $o['connect_timeout'] === null ? $timeout : self::positiveFloat($o['connect_timeout'], 'connect_timeout');
        if (!is_int($o['retries']) || $o['retries'] < 0) {
            throw new InvalidArgument("option 'retries' must be an integer >= 0");
        }
        $this->retries = $o['retries'];
        $this->retryDelay = $o['retry_delay'] === 0 || $o['retry_delay'] === 0.0 ? 0.0 : self::positiveFloat($o['retry_delay'], 'retry_delay');
        $userAgent = self::optionalString($o['user_agent'], 'user_agent') ?? ('cometbox-php/' . self::VERSION . ' PHP/' . PHP_VERSION);

        if ($o['transport'] instanceof Transport) {
            $this->transport = $o['transport'];
        } elseif (is_string($o['transport'])) {
            switch (self::selectTransport($o['transport'], $this->endpoint)) {
                case 'native':
                    $this->transport = new NativeTransport($this->endpoint, $connectTimeout, $timeout, $userAgent);
                    break;
                case 'curl':
                    $this->transport = new CurlTransport($this->endpoint, $connectTimeout, $timeout, $userAgent);
                    break;
                case 'stream':
                    $this->transport = new StreamTransport($this->endpoint, $connectTimeout, $timeout, $userAgent);
                    break;
                default:
                    $this->transport = new SocketTransport($this->endpoint, $connectTimeout, $timeout, $userAgent);
            }
        } else {
            throw new InvalidArgument("option 'transport' must be 'auto', 'native', 'curl', 'socket', 'stream' or a Transport");
        }
    }

    /**
     * Which transport a choice resolves to: 'auto' is 'native' when the
     * cometbox extension is loaded (http:// and unix://; not https://), else
     * 'curl' when ext-curl is loaded, else 'socket' ('auto' never picks
     * 'stream'). A forced choice is returned as is.
     *
     * @param bool|null $curlLoaded for tests; default extension_loaded('curl')
     * @param bool|null $nativeLoaded for tests; default extension_loaded('cometbox')
     * @throws InvalidArgument for an unknown name
     */
    public static function selectTransport(string $choice, Endpoint $endpoint, ?bool $curlLoaded = null, ?bool $nativeLoaded = null): string
    {
        $curlLoaded = $curlLoaded ?? extension_loaded('curl');
        switch ($choice) {
            case 'auto':
                if (NativeTransport::canServe($endpoint, $nativeLoaded)) {
                    return 'native';
                }
                return $curlLoaded ? 'curl' : 'socket';
            case 'native':
            case 'curl':
            case 'socket':
            case 'stream':
                return $choice;
            default:
                throw new InvalidArgument("unknown transport '$choice' (auto, native, curl, socket or stream)");
        }
    }

    /** The transport in use: 'native', 'curl', 'socket' or 'stream'. */
    public function transportName(): string
    {
        return $this->transport->name();
    }

    /**
     * Queues a message for one client.
     *
     * @param mixed $data any JSON-encodable value (or a RawJson; a string with type=text)
     * @param string|null $event a name the page can dispatch on
     * @param array{ttl?: int, type?: string} $options 'ttl' in seconds; 'type' 'json' (default) or 'text'
     * @return int commands accepted (1)
     * @throws CometBoxException
     */
    public function send(string $clientId, $data, ?string $event = null, array $options = []): int
    {
        return $this->postXml(Xml::document([self::messageCommand('to', $clientId, $data, $event, $options)]));
    }

    /**
     * Queues a message for every client subscribed to $channel now.
     *
     * @param mixed $data
     * @param array{ttl?: int, type?: string} $options
     * @throws CometBoxException
     */
    public function publish(string $channel, $data, ?string $event = null, array $options = []): int
    {
        return $this->postXml(Xml::document([self::messageCommand('channel', $channel, $data, $event, $options)]));
    }

    /**
     * Adds the client to one channel or several (several go in one batch).
     *
     * @param string|string[] $channels
     * @throws CometBoxException
     */
    public function subscribe(string $clientId, $channels): int
    {
        return $this->batch()->subscribe($clientId, $channels)->commit();
    }

    /**
     * Removes the client from one channel or several.
     *
     * @param string|string[] $channels
     * @throws CometBoxException
     */
    public function unsubscribe(string $clientId, $channels): int
    {
        return $this->batch()->unsubscribe($clientId, $channels)->commit();
    }

    /**
     * Drops the client's mailbox and subscriptions and ends its open polls.
     *
     * @throws CometBoxException
     */
    public function disconnect(string $clientId): int
    {
        return $this->postXml(Xml::document([Xml::command('disconnect', ['client' => $clientId])]));
    }

    /** A builder that sends many commands in one atomic request. */
    public function batch(): Batch
    {
        return new Batch($this);
    }

    /**
     * A token the page hands to /poll (the JS client's `token` option).
     *
     * With the 'secret' option, minted locally (HS256; claims sub, iat, exp,
     * channels); otherwise asked from the server with POST /token.
     *
     * @param string[] $channels channel names or prefixes ending in '*' the
     *                           page may subscribe to by itself
     * @throws CometBoxException
     */
    public function token(string $clientId, int $ttl = 3600, array $channels = []): string
    {
        if ($ttl <= 0) {
            throw new InvalidArgument('token ttl must be > 0 seconds');
        }
        if ($this->secret !== null) {
            return Jwt::mint($this->secret, $clientId, $ttl, $channels);
        }
        $pairs = ['client=' . rawurlencode($clientId), 'ttl=' . $ttl];
        foreach ($channels as $channel) {
            $pairs[] = 'channel=' . rawurlencode((string) $channel);
        }
        $response = $this->request('POST', '/token', implode('&', $pairs), [
            'Content-Type' => 'application/x-www-form-urlencoded',
        ]);
        $xml = self::parseXml($response->body);
        if ($xml === null || $xml->getName() !== 'token' || trim((string) $xml) === '') {
            throw new CometBoxException(
                'unexpected reply to POST /token: ' . self::excerpt($response->body),
                'unexpected-response',
                $response->status
            );
        }
        return trim((string) $xml);
    }

    /**
     * The server's counters (GET /stats), decoded: clients, open_polls,
     * queued_messages, messages_in, messages_out, uptime_s, ...
     *
     * @return array<string, mixed>
     * @throws CometBoxException
     */
    public function stats(): array
    {
        return self::decodeJsonObject($this->request('GET', '/stats'));
    }

    /**
     * Presence of one client (GET /clients/<id>): online, open polls,
     * pending messages, channels; null when the server does not know it.
     *
     * @return array<string, mixed>|null
     * @throws CometBoxException
     */
    public function presence(string $clientId): ?array
    {
        $path = '/clients/' . str_replace(['%3A', '%40'], [':', '@'], rawurlencode($clientId));
        $response = $this->exchange('GET', $path, null, []);
        if ($response->status === 404) {
            return null;
        }
        self::check($response);
        return self::decodeJsonObject($response);
    }

    /**
     * True when GET /health answers 200; false when the server is down or
     * answers otherwise (never throws Unavailable).
     */
    public function health(): bool
    {
        try {
            return $this->exchange('GET', '/health', null, [])->status === 200;
        } catch (Unavailable $e) {
            return false;
        }
    }

    /**
     * Posts an ingest XML document as it is; returns the `accepted` count.
     * For documents built elsewhere; send(), publish() and batch() build
     * theirs with XMLWriter.
     *
     * @throws CometBoxException
     */
    public function postXml(string $xml): int
    {
        $response = $this->request('POST', '/', $xml, ['Content-Type' => 'application/xml']);
        $ok = self::parseXml($response->body);
        if ($ok === null || $ok->getName() !== 'ok') {
            throw new CometBoxException(
                'unexpected reply to an ingest request: ' . self::excerpt($response->body),
                'unexpected-response',
                $response->status
            );
        }
        return (int) ($ok['accepted'] ?? 0);
    }

    /**
     * A raw request to the ingest listener with the ingest key added; any
     * status other than 2xx is thrown as the matching exception.
     *
     * @param array<string, string> $headers
     * @throws CometBoxException
     */
    public function request(string $method, string $path, ?string $body = null, array $headers = []): Response
    {
        if (!preg_match('/^[A-Z]+$/', $method)) {
            throw new InvalidArgument("invalid HTTP method '$method'");
        }
        if ($path === '' || $path[0] !== '/' || preg_match('/[\x00-\x20\x7f]/', $path)) {
            throw new InvalidArgument("the path must start with '/' and hold no spaces or control characters");
        }
        foreach ($headers as $name => $value) {
            if (!preg_match('/^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$/', (string) $name) || preg_match('/[\r\n\x00]/', (string) $value)) {
                throw new InvalidArgument("invalid request header '$name'");
            }
        }
        $response = $this->exchange($method, $path, $body, $headers);
        self::check($response);
        return $response;
    }

    /**
     * The exception for a non-2xx reply (400/413/415 RequestRejected, 401
     * Unauthorized, 429/503 Unavailable, anything else CometBoxException),
     * with the code and message of the server's <error> element (or JSON
     * {"error","message"}).
     */
    public static function exceptionFor(Response $response): CometBoxException
    {
        $status = $response->status;
        $details = [];
        $message = '';
        $body = $response->body;
        $xml = ltrim($body) !== '' && ltrim($body)[0] === '<' ? self::parseXml($body) : null;
        if ($xml !== null) {
            foreach ($xml->attributes() as $name => $value) {
                $details[(string) $name] = (string) $value;
            }
            $message = trim((string) $xml);
        } elseif (ltrim($body) !== '' && ltrim($body)[0] === '{') {
            $json = json_decode($body, true);
            if (is_array($json)) {
                if (isset($json['error']) && is_string($json['error'])) {
                    $details['code'] = $json['error'];
                }
                if (isset($json['message']) && is_string($json['message'])) {
                    $message = $json['message'];
                }
            }
        } else {
            $message = trim(self::excerpt($body));
        }
        $defaults = [
            400 => 'invalid-request',
            401 => 'unauthorized',
            404 => 'not-found',
            413 => 'too-large',
            415 => 'unsupported-media-type',
            429 => 'overloaded',
            503 => 'overloaded',
        ];
        $code = $details['code'] ?? ($defaults[$status] ?? 'unexpected-response');
        $text = sprintf('cometbox: %d %s%s', $status, $code, $message !== '' ? ': ' . $message : '');
        switch ($status) {
            case 400:
            case 413:
            case 415:
                return new RequestRejected($text, $code, $status, $details);
            case 401:
                return new Unauthorized($text, $code, $status, $details);
            case 429:
            case 503:
                return new Unavailable($text, $code, $status, $details);
            default:
                return new CometBoxException($text, $code, $status, $details);
        }
    }

    /**
     * Encodes and checks one <message>.
     *
     * @internal used by Batch
     * @param mixed $data
     * @param array<string, mixed> $options
     * @return array{0: string, 1: array<string, string|null>, 2: string|null}
     * @throws InvalidArgument
     */
    public static function messageCommand(string $targetAttr, string $target, $data, ?string $event, array $options): array
    {
        $unknown = array_diff(array_keys($options), ['ttl', 'type']);
        if ($unknown !== []) {
            throw new InvalidArgument('unknown message option(s): ' . implode(', ', $unknown) . ' (known: ttl, type)');
        }
        $type = $options['type'] ?? 'json';
        if (!is_string($type)) {
            throw new InvalidArgument("message option 'type' must be 'json' or 'text'");
        }
        $ttl = null;
        if (isset($options['ttl'])) {
            $t = $options['ttl'];
            if (is_int($t) || (is_string($t) && ctype_digit($t))) {
                $ttl = (string) (int) $t;
            } elseif (is_float($t) && $t >= 1 && floor($t) === $t && $t < PHP_INT_MAX) {
                $ttl = (string) (int) $t;
            } else {
                throw new InvalidArgument("message option 'ttl' must be a whole number of seconds");
            }
            if ((int) $ttl < 1) {
                throw new InvalidArgument("message option 'ttl' must be at least 1 second");
            }
        }
        return Xml::message([
            $targetAttr => $target,
            'event' => $event,
            'ttl' => $ttl,
        ], $data, $type);
    }

    /**
     * One request, with retries of what the protocol says was not applied.
     *
     * @param array<string, string> $headers
     * @throws Unavailable
     */
    private function exchange(string $method, string $path, ?string $body, array $headers): Response
    {
        if ($this->key !== null) {
            $headers['Authorization'] = 'Bearer ' . $this->key;
        }
        $attempt = 0;
        while (true) {
            try {
                $response = $this->transport->request($method, $path, $headers, $body);
                if ($response->status !== 503 || $attempt >= $this->retries) {
                    return $response;
                }
            } catch (Unavailable $e) {
                if (!$e->isSafeToRetry() || $attempt >= $this->retries) {
                    throw $e;
                }
            }
            $delay = $this->retryDelay * (2 ** $attempt);
            if ($delay > 0) {
                usleep((int) ($delay * 1e6));
            }
            $attempt++;
        }
    }

    /**
     * @throws CometBoxException
     */
    private static function check(Response $response): void
    {
        if ($response->status < 200 || $response->status >= 300) {
            throw self::exceptionFor($response);
        }
    }

    private static function parseXml(string $body): ?\SimpleXMLElement
    {
        if (trim($body) === '') {
            return null;
        }
        $previous = libxml_use_internal_errors(true);
        try {
            // No LIBXML_NOENT: entities are not substituted; LIBXML_NONET:
            // nothing is fetched.
            $xml = simplexml_load_string($body, \SimpleXMLElement::class, LIBXML_NONET);
        } finally {
            libxml_clear_errors();
            libxml_use_internal_errors($previous);
        }
        return $xml === false ? null : $xml;
    }

    /**
     * @return array<string, mixed>
     * @throws CometBoxException
     */
    private static function decodeJsonObject(Response $response): array
    {
        $data = json_decode($response->body, true);
        if (!is_array($data)) {
            throw new CometBoxException(
                'expected a JSON object from the server, got: ' . self::excerpt($response->body),
                'unexpected-response',
                $response->status
            );
        }
        return $data;
    }

    private static function excerpt(string $body): string
    {
        $body = preg_replace('/[^\x20-\x7e]+/', ' ', substr($body, 0, 200)) ?? '';
        return $body === '' ? '(empty body)' : $body;
    }

    /**
     * @param mixed $value
     * @throws InvalidArgument
     */
    private static function optionalString($value, string $name): ?string
    {
        if ($value === null || $value === '' || $value === false) {
            return null;
        }
        if (!is_string($value)) {
            throw new InvalidArgument("option '$name' must be a string");
        }
        if (preg_match('/[\x00-\x1f\x7f]/', $value)) {
            throw new InvalidArgument("option '$name' must not contain control characters");
        }
        return $value;
    }

    /**
     * @param mixed $value
     * @throws InvalidArgument
     */
    private static function positiveFloat($value, string $name): float
    {
        if (!(is_int($value) || is_float($value)) || $value <= 0 || is_nan((float) $value) || is_infinite((float) $value)) {
            throw new InvalidArgument("option '$name' must be a number of seconds > 0");
        }
        return (float) $value;
    }
}
