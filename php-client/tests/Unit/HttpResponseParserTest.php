<?php

declare(strict_types=1);

namespace CometBox\Tests\Unit;

use CometBox\Transport\HttpResponseParser;
use PHPUnit\Framework\TestCase;

final class HttpResponseParserTest extends TestCase
{
    /** Feeds $raw in pieces of $step bytes; returns the response once complete. */
    private function parse(string $raw, int $step, bool $close = true, bool $head = false)
    {
        $p = new HttpResponseParser($head);
        foreach ($step > 0 ? str_split($raw, $step) : [$raw] as $piece) {
            if ($p->push($piece)) {
                return $p->response();
            }
        }
        if ($close && $p->finish()) {
            return $p->response();
        }
        return null;
    }

    public static function steps(): array
    {
        return ['whole' => [0], 'byte by byte' => [1], 'odd pieces' => [7]];
    }

    /** @dataProvider steps */
    public function testContentLength(int $step): void
    {
        $r = $this->parse("HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 17\r\n\r\n<ok accepted=\"1\"/>", $step, false);
        $this->assertNotNull($r);
        $this->assertSame(200, $r->status);
        $this->assertSame('application/xml', $r->header('Content-Type'));
        $this->assertSame('<ok accepted="1"/', $r->body); // exactly 17 bytes
    }

    /** @dataProvider steps */
    public function testChunked(int $step): void
    {
        $raw = "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
            . "5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: y\r\n\r\n";
        $r = $this->parse($raw, $step, false);
        $this->assertNotNull($r);
        $this->assertSame(400, $r->status);
        $this->assertSame('hello 0123456789', $r->body);
    }

    /** @dataProvider steps */
    public function testBodyUntilClose(int $step): void
    {
        $r = $this->parse("HTTP/1.0 503 Service Unavailable\r\n\r\n<error code=\"overloaded\"/>", $step);
        $this->assertSame(503, $r->status);
        $this->assertSame('<error code="overloaded"/>', $r->body);
    }

    public function testInterimResponseIsSkipped(): void
    {
        $r = $this->parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 3, false);
        $this->assertSame(200, $r->status);
        $this->assertSame('ok', $r->body);
    }

    public function testNoBodyFor204AndHead(): void
    {
        $this->assertSame('', $this->parse("HTTP/1.1 204 No Content\r\n\r\n", 0, false)->body);
        $this->assertSame('', $this->parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 0, false, true)->body);
    }

    public function testTruncatedRepliesAreIncomplete(): void
    {
        $this->assertNull($this->parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0));
        $this->assertNull($this->parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 0));
        $this->assertNull($this->parse("HTTP/1.1 200 OK\r\nContent-", 0));
    }

    public function testGarbageIsRejected(): void
    {
        $this->expectException(\UnexpectedValueException::class);
        $this->parse("SSH-2.0-OpenSSH\r\n\r\n", 0);
    }

    public function testBadChunkSizeIsRejected(): void
    {
        $this->expectException(\UnexpectedValueException::class);
        $this->parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0);
    }
}
