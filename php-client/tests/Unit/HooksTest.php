<?php

declare(strict_types=1);

namespace CometBox\Tests\Unit;

use CometBox\Exception\SignatureError;
use CometBox\Hooks;
use PHPUnit\Framework\TestCase;

/**
 * CometBox\Hooks against a vector computed with openssl (the one
 * python-client/tests/test_hooks.py and src/hooks/signing.rs check too).
 * tests/it/hooks.rs runs it against the real server's requests.
 */
final class HooksTest extends TestCase
{
    private const SECRET = 'whsec-test';
    private const NOW = 1763712000;
    private const BODY = '{"id":"evt-1","type":"subscribe","client":"alice","channel":"room:42","ts":1763712000123,"node":"n1"}';
    // printf '%s' "1763712000.$BODY" | openssl dgst -sha256 -hmac whsec-test
    private const VECTOR = 'db1a4fd54f8f549afdca1dd6705b6f6822dc1eef24b73aae61f7979792979849';

    public function testTheOpensslVector(): void
    {
        $event = Hooks::verify(self::BODY, 't=' . self::NOW . ',v1=' . self::VECTOR, self::SECRET, 300, self::NOW);
        $this->assertSame('evt-1', $event['id']);
        $this->assertSame('subscribe', $event['type']);
        $this->assertSame('alice', $event['client']);
        $this->assertSame('room:42', $event['channel']);
        // Upper-case hex and a second (rotated-out) v1 are accepted.
        $header = 't=' . self::NOW . ',v1=' . str_repeat('0', 64) . ',v1=' . strtoupper(self::VECTOR);
        $this->assertSame('evt-1', Hooks::verify(self::BODY, $header, self::SECRET, 300, self::NOW)['id']);
    }

    /**
     * @return array<string, array{0: ?string, 1: int, 2: string}>
     */
    public static function refusals(): array
    {
        $good = 't=' . self::NOW . ',v1=' . self::VECTOR;
        return [
            'no header' => [null, self::NOW, 'malformed-signature'],
            'empty' => ['', self::NOW, 'malformed-signature'],
            'no v1' => ['t=' . self::NOW, self::NOW, 'malformed-signature'],
            'two t' => ['t=1,t=2,v1=' . self::VECTOR, self::NOW, 'malformed-signature'],
            'short v1' => ['t=' . self::NOW . ',v1=abc', self::NOW, 'malformed-signature'],
            'stale' => [$good, self::NOW + 301, 'stale-signature'],
            'future' => [$good, self::NOW - 301, 'stale-signature'],
            'wrong' => ['t=' . self::NOW . ',v1=' . str_repeat('a', 64), self::NOW, 'bad-signature'],
            'other time' => ['t=' . (self::NOW + 1) . ',v1=' . self::VECTOR, self::NOW, 'bad-signature'],
        ];
    }

    /**
     * @dataProvider refusals
     */
    public function testRefusals(?string $header, int $now, string $code): void
    {
        try {
            Hooks::verify(self::BODY, $header, self::SECRET, 300, $now);
            $this->fail('accepted');
        } catch (SignatureError $e) {
            $this->assertSame($code, $e->getErrorCode());
            $this->assertSame(401, $e->getHttpStatus());
        }
    }

    public function testASignedBodyThatIsNotAnEvent(): void
    {
        $body = '[1,2]';
        $header = 't=' . self::NOW . ',v1=' . hash_hmac('sha256', self::NOW . '.' . $body, self::SECRET);
        $this->expectException(SignatureError::class);
        Hooks::verify($body, $header, self::SECRET, 300, self::NOW);
    }

    public function testAnswers(): void
    {
        $this->assertSame(['allow' => true], json_decode(Hooks::allow(), true));
        $this->assertSame(['allow' => false, 'reason' => 'staff only'], json_decode(Hooks::deny('staff only'), true));
        $this->assertSame(['allow' => true, 'data' => ['text' => 'é/x']], json_decode(Hooks::allowWith(['text' => 'é/x']), true));
        $this->assertSame(['allow' => true, 'data' => null], json_decode(Hooks::allowWith(null), true));
    }
}
