<?php

declare(strict_types=1);

namespace CometBox\Exception;

/**
 * The server refused the request as it was written (HTTP 400, 413, 415):
 * `malformed-xml`, `invalid-json`, `invalid-id`, `invalid-request`,
 * `too-large`, `unsupported-media-type`. Nothing was applied; sending the
 * same request again will fail again.
 */
class RequestRejected extends CometBoxException
{
}
