<?php

declare(strict_types=1);

namespace CometBox\Transport;

/**
 * Incremental HTTP/1.1 response parser used by the raw-socket transport.
 *
 * Feed it bytes with push(); it answers whether the response is complete.
 * Understands Content-Length bodies, chunked bodies (chunk extensions and
 * trailers ignored), bodies delimited by the end of the connection, interim
 * 1xx responses, and replies that never have a body (HEAD, 204, 304).
 *
 * @internal
 */
final class HttpResponseParser
{
    /** @var string */
    private $buffer = '';

    /** @var bool */
    private $headRequest;

    /** @var int|null */
    private $status;

    /** @var array<string, string> */
    private $headers = [];

    /** @var string 'head', 'length', 'chunked', 'eof', 'done' */
    private $state = 'head';

    /** @var int */
    private $contentLength = 0;

    /** @var string decoded body (chunked) */
    private $body = '';

    public function __construct(bool $headRequest = false)
    {
        $this->headRequest = $headRequest;
    }

    /**
     * Adds received bytes. Returns true once the whole response is there.
     *
     * @throws \UnexpectedValueException on a reply that is not valid HTTP
     */
    public function push(string $bytes): bool
    {
        $this->buffer .= $bytes;
        return $this->advance();
    }

    /**
     * The peer closed the connection. Returns true if that completes the
     * response (a body delimited by the connection end), false if the reply
     * was cut short.
     */
    public function finish(): bool
    {
        if ($this->state === 'eof') {
            $this->body = $this->buffer;
            $this->buffer = '';
            $this->state = 'done';
        }
        return $this->state === 'done';
    }

    public function isComplete(): bool
    {
        return $this->state === 'done';
    }

    public function response(): Response
    {
        if ($this->state !== 'done' || $this->status === null) {
            throw new \LogicException('response not complete');
        }
        return new Response($this->status, $this->headers, $this->body);
    }

    private function advance(): bool
    {
        while (true) {
            switch ($this->state) {
                case 'head':
                    if (!$this->parseHead()) {
                        return false;
                    }
                    break;
                case 'length':
                    if (strlen($this->buffer) < $this->contentLength) {
                        return false;
                    }
                    $this->body = substr($this->buffer, 0, $this->contentLength);
                    $this->buffer = '';
                    $this->state = 'done';
                    return true;
                case 'chunked':
                    return $this->parseChunks();
                case 'eof':
                    return false;
                case 'done':
                    return true;
            }
        }
    }

    private function parseHead(): bool
    {
        // Tolerate bare LF line ends.
        $end = strpos($this->buffer, "\r\n\r\n");
        $sepLen = 4;
        $lfEnd = strpos($this->buffer, "\n\n");
        if ($lfEnd !== false && ($end === false || $lfEnd < $end)) {
            $end = $lfEnd;
            $sepLen = 2;
        }
        if ($end === false) {
            if (strlen($this->buffer) > 65536) {
                throw new \UnexpectedValueException('response header too long');
            }
            return false;
        }
        $head = substr($this->buffer, 0, $end);
        $this->buffer = (string) substr($this->buffer, $end + $sepLen);
        $lines = preg_split('/\r?\n/', $head);
        $statusLine = array_shift($lines);
        if (!preg_match('#^HTTP/\d(?:\.\d)? +(\d{3})(?: .*)?$#', (string) $statusLine, $m)) {
            throw new \UnexpectedValueException('not an HTTP response: ' . substr((string) $statusLine, 0, 80));
        }
        $status = (int) $m[1];
        if ($status >= 100 && $status < 200 && $status !== 101) {
            return true; // interim reply: parse the next head
        }
        $this->status = $status;
        $this->headers = Response::parseHeaderLines($lines);

        if ($this->headRequest || $status === 204 || $status === 304) {
            $this->state = 'done';
            return true;
        }
        $te = strtolower($this->headers['transfer-encoding'] ?? '');
        if ($te !== '' && $te !== 'identity') {
            if (substr(rtrim($te), -7) !== 'chunked') {
                throw new \UnexpectedValueException("unsupported transfer-encoding '$te'");
            }
            $this->state = 'chunked';
            return true;
        }
        if (isset($this->headers['content-length'])) {
            $cl = trim(explode(',', $this->headers['content-length'])[0]);
            if (!ctype_digit($cl)) {
                throw new \UnexpectedValueException("invalid content-length '$cl'");
            }
            $this->contentLength = (int) $cl;
            $this->state = 'length';
            return true;
        }
        $this->state = 'eof';
        return true;
    }

    /** Decodes as many complete chunks as the buffer holds. */
    private function parseChunks(): bool
    {
        while (true) {
            $lineEnd = strpos($this->buffer, "\n");
            if ($lineEnd === false) {
                if (strlen($this->buffer) > 4096) {
                    throw new \UnexpectedValueException('chunk size line too long');
                }
                return false;
            }
            $sizeLine = rtrim(substr($this->buffer, 0, $lineEnd), "\r");
            $sizeHex = trim(explode(';', $sizeLine, 2)[0]);
            if ($sizeHex === '' || !ctype_xdigit($sizeHex) || strlen($sizeHex) > 12) {
                throw new \UnexpectedValueException("invalid chunk size '$sizeLine'");
            }
            $size = (int) hexdec($sizeHex);
            if ($size === 0) {
                // Last chunk: skip trailers up to the empty line.
                $rest = (string) substr($this->buffer, $lineEnd + 1);
                if (preg_match('/^(?:[^\r\n]+\r?\n)*\r?\n/', $rest, $m)) {
                    $this->buffer = '';
                    $this->state = 'done';
                    return true;
                }
                return false;
            }
            $dataStart = $lineEnd + 1;
            if (strlen($this->buffer) < $dataStart + $size + 1) {
                return false;
            }
            $after = substr($this->buffer, $dataStart + $size, 2);
            if ($after === "\r\n") {
                $skip = 2;
            } elseif ($after !== '' && $after[0] === "\n") {
                $skip = 1;
            } elseif ($after === "\r") {
                return false; // the LF has not arrived yet
            } else {
                throw new \UnexpectedValueException('chunk not followed by CRLF');
            }
            $this->body .= substr($this->buffer, $dataStart, $size);
            $this->buffer = (string) substr($this->buffer, $dataStart + $size + $skip);
        }
    }
}
