<?php

declare(strict_types=1);

namespace CometBox\Internal;

use CometBox\Exception\InvalidArgument;
use CometBox\RawJson;

/**
 * Builds ingest documents with XMLWriter (which escapes markup characters)
 * after checking that every string is something XML 1.0 can carry.
 *
 * @internal
 */
final class Xml
{
    /**
     * Characters XML 1.0 cannot hold: C0 controls other than tab, LF, CR;
     * U+FFFE and U+FFFF. (Surrogates cannot appear in valid UTF-8.)
     */
    private const NOT_XML_CHAR = '/[^\x{9}\x{A}\x{D}\x{20}-\x{D7FF}\x{E000}-\x{FFFD}\x{10000}-\x{10FFFF}]/u';

    public static function isValidUtf8(string $s): bool
    {
        return preg_match('//u', $s) === 1;
    }

    /** True when $s is valid UTF-8 made only of XML 1.0 characters. */
    public static function isXmlSafe(string $s): bool
    {
        return self::isValidUtf8($s) && preg_match(self::NOT_XML_CHAR, $s) === 0;
    }

    /**
     * @throws InvalidArgument
     */
    public static function assertXmlSafe(string $s, string $what): void
    {
        if (!self::isValidUtf8($s)) {
            throw new InvalidArgument("$what is not valid UTF-8");
        }
        if (preg_match(self::NOT_XML_CHAR, $s, $m) === 1) {
            throw new InvalidArgument(sprintf(
                '%s holds U+%04X, which XML 1.0 cannot carry',
                $what,
                self::codepoint($m[0])
            ));
        }
    }

    /**
     * Turns $data into the text of a <message> and its type.
     *
     * - 'json' (default): json_encode($data) with errors raised as
     *   InvalidArgument; RawJson is sent verbatim. JSON escapes control
     *   characters inside strings, so the text is always XML-safe (U+FFFE and
     *   U+FFFF are \u-escaped when present).
     * - 'text': $data must be a string (or scalar / Stringable). It must be
     *   valid UTF-8. If it holds characters XML 1.0 cannot carry (control
     *   characters other than tab/LF/CR, U+FFFE, U+FFFF), it is sent as
     *   type json holding the JSON string instead, which the browser
     *   receives as exactly the same string value.
     *
     * @param mixed $data
     * @return array{0: string, 1: string} [text, type]
     * @throws InvalidArgument
     */
    public static function encodePayload($data, string $type): array
    {
        if ($type === 'text') {
            if (is_string($data)) {
                $text = $data;
            } elseif (is_scalar($data) || (is_object($data) && method_exists($data, '__toString'))) {
                $text = (string) $data;
            } else {
                throw new InvalidArgument(sprintf('a type=text payload must be a string, got %s', self::typeName($data)));
            }
            if (!self::isValidUtf8($text)) {
                throw new InvalidArgument('a type=text payload must be valid UTF-8');
            }
            if (preg_match(self::NOT_XML_CHAR, $text) === 1) {
                return [self::jsonEncode($text), 'json'];
            }
            return [$text, 'text'];
        }
        if ($type !== 'json') {
            throw new InvalidArgument("message type must be 'json' or 'text', got '$type'");
        }
        if ($data instanceof RawJson) {
            self::assertXmlSafe($data->json, 'the RawJson payload');
            return [$data->json, 'json'];
        }
        return [self::jsonEncode($data), 'json'];
    }

    /**
     * @param mixed $data
     * @throws InvalidArgument
     */
    public static function jsonEncode($data): string
    {
        $flags = JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION;
        try {
            $json = json_encode($data, $flags | JSON_THROW_ON_ERROR);
            if (preg_match(self::NOT_XML_CHAR, $json) === 1) {
                // Only U+FFFE / U+FFFF can get here: escape every non-ASCII.
                $json = json_encode($data, JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION | JSON_THROW_ON_ERROR);
            }
        } catch (\JsonException $e) {
            throw new InvalidArgument('the payload cannot be JSON-encoded: ' . $e->getMessage(), $e);
        }
        return $json;
    }

    /**
     * One command, its strings checked now (and only now: document() trusts
     * what command() and message() made): [name, attributes, text].
     *
     * @param array<string, string|null> $attributes
     * @return array{0: string, 1: array<string, string|null>, 2: string|null}
     * @throws InvalidArgument
     */
    public static function command(string $name, array $attributes, ?string $text = null): array
    {
        self::assertAttributesXmlSafe($name, $attributes);
        if ($text !== null) {
            self::assertXmlSafe($text, "the text of <$name>");
        }
        return [$name, $attributes, $text];
    }

    /**
     * One <message> carrying $data: the payload is encoded by
     * encodePayload(), which checks its text as part of encoding it (so it
     * is not checked again here); the attributes are checked now. A `type`
     * attribute is set when the payload is sent as text.
     *
     * @param array<string, string|null> $attributes
     * @param mixed $data
     * @return array{0: string, 1: array<string, string|null>, 2: string|null}
     * @throws InvalidArgument
     */
    public static function message(array $attributes, $data, string $type): array
    {
        [$text, $sentType] = self::encodePayload($data, $type);
        $attributes['type'] = $sentType === 'json' ? null : $sentType;
        self::assertAttributesXmlSafe('message', $attributes);
        return ['message', $attributes, $text];
    }

    /**
     * @param array<string, string|null> $attributes
     * @throws InvalidArgument
     */
    private static function assertAttributesXmlSafe(string $name, array $attributes): void
    {
        foreach ($attributes as $attr => $value) {
            if ($value !== null) {
                self::assertXmlSafe($value, "the $attr attribute of <$name>");
            }
        }
    }

    /**
     * Serializes commands: one command is sent as its element, several (or
     * any number when $asBatch) as a <batch>. Each command is [element name, attributes (null values
     * omitted), text or null], as made by command() or message(), which
     * checked every string: nothing is checked again here.
     *
     * @param list<array{0: string, 1: array<string, string|null>, 2: string|null}> $commands
     */
    public static function document(array $commands, bool $asBatch = false): string
    {
        $w = new \XMLWriter();
        $w->openMemory();
        $w->startDocument('1.0', 'UTF-8');
        $batch = $asBatch || count($commands) !== 1;
        if ($batch) {
            $w->startElement('batch');
        }
        foreach ($commands as [$name, $attributes, $text]) {
            $w->startElement($name);
            foreach ($attributes as $attr => $value) {
                if ($value === null) {
                    continue;
                }
                $w->writeAttribute($attr, $value);
            }
            if ($text !== null && $text !== '') {
                $w->text($text);
            }
            $w->endElement();
        }
        if ($batch) {
            $w->endElement();
        }
        $w->endDocument();
        return $w->outputMemory();
    }

    /**
     * @param mixed $value
     */
    private static function typeName($value): string
    {
        return function_exists('get_debug_type') ? get_debug_type($value) : gettype($value);
    }

    private static function codepoint(string $char): int
    {
        $c = unpack('C*', $char);
        if ($c === false || $c === []) {
            return 0;
        }
        $b = array_values($c);
        if ($b[0] < 0x80) {
            return $b[0];
        }
        if ($b[0] < 0xE0) {
            return (($b[0] & 0x1F) << 6) | ($b[1] & 0x3F);
        }
        if ($b[0] < 0xF0) {
            return (($b[0] & 0x0F) << 12) | (($b[1] & 0x3F) << 6) | ($b[2] & 0x3F);
        }
        return (($b[0] & 0x07) << 18) | (($b[1] & 0x3F) << 12) | (($b[2] & 0x3F) << 6) | ($b[3] & 0x3F);
    }
}

