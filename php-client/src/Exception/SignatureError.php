<?php

declare(strict_types=1);

namespace CometBox\Exception;

/**
 * A hook request that must not be trusted (see CometBox\Hooks::verify()).
 *
 * Codes: `malformed-signature` (no Cometbox-Signature header, or not
 * `t=...,v1=...`), `stale-signature` (its timestamp is further from now than
 * the tolerance: a replay), `bad-signature` (no v1 matches the body and
 * secret), `invalid-body` (signed, but not a JSON event object).
 */
final class SignatureError extends CometBoxException
{
}
