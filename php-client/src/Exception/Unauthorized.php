<?php

declare(strict_types=1);

namespace CometBox\Exception;

/**
 * HTTP 401: the ingest key is missing or wrong (code `unauthorized`).
 */
class Unauthorized extends CometBoxException
{
}
