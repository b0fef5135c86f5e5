<?php

declare(strict_types=1);

namespace CometBox\Tests\Unit;

use CometBox\Client;
use CometBox\Exception\InvalidArgument;
use CometBox\Internal\Xml;
use CometBox\RawJson;
use PHPUnit\Framework\TestCase;

final class XmlTest extends TestCase
{
    /** Parses a document the way a conforming XML parser does. */
    private function parse(string $xml): \DOMDocument
    {
        $doc = new \DOMDocument();
        $previous = libxml_use_internal_errors(true);
        $ok = $doc->loadXML($xml, LIBXML_NONET);
        $errors = libxml_get_errors();
        libxml_clear_errors();
        libxml_use_internal_errors($previous);
        $this->assertTrue($ok, 'not well-formed: ' . $xml . ' ' . json_encode(array_map(static function ($e) {
            return $e->message;
        }, $errors)));
        return $doc;
    }

    public static function hostileStrings(): array
    {
        return [
            'markup' => ['<script>alert("x")</script>'],
            'ampersands' => ['a & b &amp; &lt; &#60; &unknown;'],
            'cdata end' => [']]> <![CDATA[ x ]]>'],
            'quotes' => ['"double" \'single\''],
            'whitespace' => ["  lead\ttab\nline\r\ncrlf\rcr  "],
            'controls' => ["nul\x00 bel\x07 esc\x1b del\x7f"],
            'non-ascii' => ["caf\u{e9} \u{4e2d}\u{6587} \u{1F600} \u{200B}\u{2028}\u{FEFF}"],
            'non-characters' => ["\u{FFFE}\u{FFFF}x"],
            'entity-looking' => ['<!DOCTYPE x [<!ENTITY a "b">]>&a;'],
        ];
    }

    /**
     * @dataProvider hostileStrings
     */
    public function testJsonPayloadSurvivesXmlRoundTrip(string $s): void
    {
        $data = ['s' => $s, 'k' => [$s => 1]];
        $xml = Xml::document([Client::messageCommand('to', 'alice', $data, 'ev', [])]);
        $doc = $this->parse($xml);
        $message = $doc->documentElement;
        $this->assertSame('message', $message->nodeName);
        $this->assertSame('alice', $message->getAttribute('to'));
        $this->assertSame($data, json_decode($message->textContent, true, 512, JSON_THROW_ON_ERROR));
    }

    /**
     * @dataProvider hostileStrings
     */
    public function testTextPayloadSurvivesXmlRoundTrip(string $s): void
    {
        $xml = Xml::document([Client::messageCommand('channel', 'room:1', $s, null, ['type' => 'text'])]);
        $message = $this->parse($xml)->documentElement;
        if ($message->getAttribute('type') === 'text') {
            $this->assertSame($s, $message->textContent);
        } else {
            // Characters XML cannot carry: sent as a JSON string instead.
            $this->assertTrue(preg_match('/[\x00-\x08\x0b\x0c\x0e-\x1f]|\x{FFFE}|\x{FFFF}/u', $s) === 1);
            $this->assertSame('', $message->getAttribute('type'));
            $this->assertSame($s, json_decode($message->textContent, true, 512, JSON_THROW_ON_ERROR));
        }
    }

    public function testCarriageReturnIsWrittenAsCharacterReference(): void
    {
        $xml = Xml::document([Client::messageCommand('to', 'a', "x\ry", null, ['type' => 'text'])]);
        $this->assertStringContainsString('x&#13;y', $xml);
    }

    public function testAttributesAreEscaped(): void
    {
        $xml = Xml::document([Client::messageCommand('to', 'a"<&>\'b', 1, 'e"v<&', [])]);
        $message = $this->parse($xml)->documentElement;
        $this->assertSame('a"<&>\'b', $message->getAttribute('to'));
        $this->assertSame('e"v<&', $message->getAttribute('event'));
    }

    public function testControlCharacterInAttributeIsRefused(): void
    {
        $this->expectException(InvalidArgument::class);
        $this->expectExceptionMessage('U+0001');
        Client::messageCommand('to', "al\x01ice", 1, null, []);
    }

    public function testInvalidUtf8IsRefused(): void
    {
        foreach ([['to', "\xff", 1, null, []], ['to', 'a', "\xc3(", null, []], ['to', 'a', "\xc3(", null, ['type' => 'text']], ['to', 'a', 1, "\xe2\x82", []]] as $args) {
            try {
                Client::messageCommand(...$args);
                $this->fail('accepted invalid UTF-8: ' . json_encode(array_map('bin2hex', array_filter($args, 'is_string'))));
            } catch (InvalidArgument $e) {
                $this->assertSame('invalid-argument', $e->getErrorCode());
            }
        }
    }

    public function testUnencodableJsonIsRefused(): void
    {
        $this->expectException(InvalidArgument::class);
        Client::messageCommand('to', 'a', ['x' => NAN], null, []);
    }

    public function testRawJsonIsSentVerbatim(): void
    {
        $xml = Xml::document([Client::messageCommand('to', 'a', new RawJson('{"a": [1, 2]}'), null, [])]);
        $this->assertSame('{"a": [1, 2]}', $this->parse($xml)->documentElement->textContent);
        $this->expectException(InvalidArgument::class);
        Client::messageCommand('to', 'a', new RawJson("\"\x01\""), null, []);
    }

    public function testMessageOptions(): void
    {
        $xml = Xml::document([Client::messageCommand('to', 'a', 'hi', 'ev', ['ttl' => 30, 'type' => 'text'])]);
        $m = $this->parse($xml)->documentElement;
        $this->assertSame('30', $m->getAttribute('ttl'));
        $this->assertSame('text', $m->getAttribute('type'));
        $this->assertSame('ev', $m->getAttribute('event'));
        foreach ([['ttl' => -1], ['ttl' => 0], ['ttl' => 1.5], ['ttl' => 'x'], ['type' => 'xml'], ['tll' => 3]] as $bad) {
            try {
                Client::messageCommand('to', 'a', 'hi', null, $bad);
                $this->fail('accepted ' . json_encode($bad));
            } catch (InvalidArgument $e) {
                $this->addToAssertionCount(1);
            }
        }
    }

    public function testOneCommandIsOneElementAndSeveralAreABatch(): void
    {
        $one = $this->parse(Xml::document([Xml::command('disconnect', ['client' => 'a'])]));
        $this->assertSame('disconnect', $one->documentElement->nodeName);
        $two = $this->parse(Xml::document([Xml::command('disconnect', ['client' => 'a']), Xml::command('subscribe', ['client' => 'a', 'channel' => 'c'])]));
        $this->assertSame('batch', $two->documentElement->nodeName);
        $this->assertSame(2, $two->documentElement->childNodes->length);
        $forced = $this->parse(Xml::document([Xml::command('disconnect', ['client' => 'a'])], true));
        $this->assertSame('batch', $forced->documentElement->nodeName);
    }
}
