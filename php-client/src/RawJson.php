<?php

declare(strict_types=1);

namespace CometBox;

/**
 * A payload that is already JSON text: sent as it is, without encoding
 * again. The server checks that it parses (RequestRejected 'invalid-json'
 * otherwise).
 *
 *     $client->send('alice', new RawJson('{"n": 1}'));
 */
final class RawJson
{
    /** @var string */
    public $json;

    public function __construct(string $json)
    {
        $this->json = $json;
    }

    public function __toString(): string
    {
        return $this->json;
    }
}
