<?php

declare(strict_types=1);

namespace CometBox\Tests\Unit;

use CometBox\Jwt;
use PHPUnit\Framework\TestCase;

final class JwtTest extends TestCase
{
    public function testKnownVector(): void
    {
        // Computed independently with Python's hmac/hashlib/base64.
        $this->assertSame(
            'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImlhdCI6MTAwMCwiZXhwIjoxMDYwLCJjaGFubmVscyI6WyJyb29tOioiXX0.kXAEsJ5V6RwjAab_fBe810f9sHJHebSE-TeMEN8HkZw',
            Jwt::mint('s', 'alice', 60, ['room:*'], 1000)
        );
    }

    public function testClaims(): void
    {
        $before = time();
        $token = Jwt::mint('secret', 'user:42', 120);
        $claims = Jwt::claims($token);
        $this->assertSame('user:42', $claims['sub']);
        $this->assertGreaterThanOrEqual($before, $claims['iat']);
        $this->assertSame($claims['iat'] + 120, $claims['exp']);
        $this->assertArrayNotHasKey('channels', $claims);
        $this->assertDoesNotMatchRegularExpression('/[=+\/]/', $token);
    }

    public function testEmptySecretIsRefused(): void
    {
        $this->expectException(\CometBox\Exception\InvalidArgument::class);
        Jwt::mint('', 'a');
    }
}
