<?php

declare(strict_types=1);

namespace CometBox;

use CometBox\Exception\CometBoxException;

/**
 * Collects commands and sends them in one request, as one atomic <batch>:
 * the server validates all of them before applying any.
 *
 *     $accepted = $client->batch()
 *         ->send('alice', ['text' => 'hi'], 'notice')
 *         ->publish('room:42', ['from' => 'bob'], 'chat')
 *         ->subscribe('alice', 'room:42')
 *         ->commit();
 *
 * Each method checks and encodes its arguments at once (an InvalidArgument
 * is thrown by the call that has the bad value). commit() sends everything
 * and empties the batch, so it can be filled again; a batch with no command
 * commits to 0 without a request.
 */
final class Batch implements \Countable
{
    /** @var Client */
    private $client;

    /** @var list<array{0: string, 1: array<string, string|null>, 2: string|null}> */
    private $commands = [];

    public function __construct(Client $client)
    {
        $this->client = $client;
    }

    /**
     * Adds a message to one client. See Client::send().
     *
     * @param mixed $data
     * @param array{ttl?: int, type?: string} $options
     * @return $this
     */
    public function send(string $clientId, $data, ?string $event = null, array $options = []): self
    {
        $this->commands[] = Client::messageCommand('to', $clientId, $data, $event, $options);
        return $this;
    }

    /**
     * Adds a message to a channel. See Client::publish().
     *
     * @param mixed $data
     * @param array{ttl?: int, type?: string} $options
     * @return $this
     */
    public function publish(string $channel, $data, ?string $event = null, array $options = []): self
    {
        $this->commands[] = Client::messageCommand('channel', $channel, $data, $event, $options);
        return $this;
    }

    /**
     * @param string|string[] $channels
     * @return $this
     */
    public function subscribe(string $clientId, $channels): self
    {
        foreach ((array) $channels as $channel) {
            $this->commands[] = Internal\Xml::command('subscribe', ['client' => $clientId, 'channel' => (string) $channel]);
        }
        return $this;
    }

    /**
     * @param string|string[] $channels
     * @return $this
     */
    public function unsubscribe(string $clientId, $channels): self
    {
        foreach ((array) $channels as $channel) {
            $this->commands[] = Internal\Xml::command('unsubscribe', ['client' => $clientId, 'channel' => (string) $channel]);
        }
        return $this;
    }

    /**
     * @return $this
     */
    public function disconnect(string $clientId): self
    {
        $this->commands[] = Internal\Xml::command('disconnect', ['client' => $clientId]);
        return $this;
    }

    public function count(): int
    {
        return count($this->commands);
    }

    /** The XML document commit() would send. */
    public function toXml(): string
    {
        return Internal\Xml::document($this->commands, true);
    }

    /**
     * Sends the batch; returns the number of commands the server accepted.
     * On an exception the batch keeps its commands.
     *
     * @throws CometBoxException
     */
    public function commit(): int
    {
        if ($this->commands === []) {
            return 0;
        }
        $accepted = $this->client->postXml(Internal\Xml::document($this->commands, true));
        $this->commands = [];
        return $accepted;
    }
}
