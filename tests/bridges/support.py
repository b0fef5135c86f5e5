"""What the bridge tests share: the brokers and the cometbox serving the
whole suite (``Env``, its config), each broker's ordinary client as a
producer, and a browser's view.

One set of brokers (started in parallel, each with a plain and a TLS
listener) and one cometbox (disk store) serve every test module (the
session fixture in conftest.py); tests that restart a broker or cometbox
leave them running.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
from pathlib import Path
from typing import Any, Dict, List, Tuple

import nats
import pika
import stomp

import brokers
from cometbox_server import Browser, Cometbox

_ids = itertools.count()


def uid(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


# ------------------------------------------------------------------ fixtures


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pki = brokers.Pki(root)
        self.redis = brokers.Redis(root, self.pki)
        self.nats = brokers.Nats(root)
        self.nats_secure = brokers.NatsSecure(root, self.pki)
        self.activemq = brokers.ActiveMQ(root, self.pki)
        self.rabbit = brokers.RabbitMQ(root, self.pki)
        self.all = [self.activemq, self.rabbit, self.redis, self.nats, self.nats_secure]
        self.cometbox: Cometbox

    def secret_env(self) -> Dict[str, str]:
        """Passwords given by environment, by table number (BRIDGES' order)."""
        return {f"COMETBOX_BRIDGE__{BRIDGES.index(name)}__PASSWORD": password
                for name, password in [("amqps", "guest"), ("nats-tls", brokers.PASSWORD),
                                       ("rediss", brokers.PASSWORD)]}

    def config(self) -> str:
        routed = ('channel_header = "cometbox-channel"\nclient_header = "cometbox-client"\n'
                  'event_header = "cometbox-event"\n')
        return f"""
[public]
listen = "127.0.0.1:0"
[ingest]
listen = "127.0.0.1:0"
[auth]
secret = "bridges-test-secret"
[limits]
mailbox_max_messages = 100000
max_payload_bytes = 4096
[store]
kind = "disk"
path = "{self.root / 'store'}"

[[bridge]]
name = "redis-pubsub"
url = "{self.redis.url}"
source = "cb-pubsub"
channel = "redis-ps"
event = "ps"
max_backoff = "1s"

[[bridge]]
name = "redis-stream"
url = "{self.redis.url}"
source = "stream:cb-stream"
channel = "redis-stream"
{routed}max_backoff = "1s"

[[bridge]]
name = "nats"
url = "{self.nats.url}"
source = "cb.>"
channel = "nats"
{routed}max_backoff = "1s"

[[bridge]]
name = "amqp-queue"
url = "{self.rabbit.url}"
source = "cb-queue"
channel = "amqp"
{routed}max_backoff = "1s"

[[bridge]]
name = "amqp-exchange"
url = "{self.rabbit.url}"
source = "amq.topic/cb.#"
channel = "amqp-topic"
type = "text"
max_backoff = "1s"

[[bridge]]
name = "rabbit-stomp"
url = "stomp://guest:guest@127.0.0.1:{self.rabbit.stomp_port}/%2f"
source = "/queue/cb-rstomp"
channel = "rabbit-stomp"
{routed}max_backoff = "1s"

[[bridge]]
name = "stomp-queue"
url = "{self.activemq.url}"
source = "/queue/cb-queue"
channel = "stomp"
{routed}max_backoff = "1s"

[[bridge]]
name = "stomp-topic"
url = "{self.activemq.url}"
source = "/topic/cb-topic"
channel = "stomp-topic"
event = "tick"
max_backoff = "1s"
""" + self.tls_config(routed)

    def tls_config(self, routed: str) -> str:
        """The TLS bridges: one per broker and protocol, credentials from the
        file, the URL or the environment (``secret_env``)."""
        p, user, password = self.pki, brokers.USER, brokers.PASSWORD
        ca = f'ca_file = "{p.ca}"\n'
        client = f'client_cert = "{p.client_cert}"\nclient_key = "{p.client_key}"\n'
        return f"""
[[bridge]]
name = "stomp-ssl"
url = "stomp+ssl://127.0.0.1:{self.activemq.ssl_port}"
source = "/queue/cb-tls"
channel = "stomp-ssl"
{ca}{routed}max_backoff = "1s"

[[bridge]]
name = "rabbit-stomps"
url = "stomps://127.0.0.1:{self.rabbit.stomp_ssl_port}/%2f"
user = "guest"
password = "guest"
source = "/queue/cb-rstomps"
channel = "rabbit-stomps"
{ca}{client}{routed}max_backoff = "1s"

[[bridge]]
name = "amqps"
url = "amqps://guest@127.0.0.1:{self.rabbit.ssl_port}/%2f"
source = "cb-tls-queue"
channel = "amqps"
{ca}{client}{routed}max_backoff = "1s"

[[bridge]]
name = "nats-tls"
url = "tls://127.0.0.1:{self.nats_secure.port}"
user = "{user}"
source = "cbtls.>"
channel = "nats-tls"
{ca}{routed}max_backoff = "1s"

[[bridge]]
name = "jetstream"
url = "tls://{user}:{password}@127.0.0.1:{self.nats_secure.port}"
source = "jetstream:{JS_STREAM}"
consumer = "cometbox-test"
channel = "jetstream"
{ca}{routed}max_backoff = "1s"

[[bridge]]
name = "rediss"
url = "rediss://{user}@127.0.0.1:{self.redis.tls_port}"
source = "stream:cb-tls-stream"
channel = "rediss"
{ca}{client}{routed}max_backoff = "1s"
"""


BRIDGES = ["redis-pubsub", "redis-stream", "nats", "amqp-queue", "amqp-exchange", "rabbit-stomp",
           "stomp-queue", "stomp-topic",
           "stomp-ssl", "rabbit-stomps", "amqps", "nats-tls", "jetstream", "rediss"]

#: The JetStream stream the test declares (as an operator would) and its subjects.
JS_STREAM = "CB"
JS_SUBJECTS = "cbjs.>"


def declare_queue(rabbit: brokers.RabbitMQ) -> None:
    """The operator declares the durable queues the bridges consume."""
    with pika.BlockingConnection(pika.URLParameters(rabbit.url)) as conn:
        conn.channel().queue_declare("cb-queue", durable=True)
        conn.channel().queue_declare("cb-tls-queue", durable=True)


def secure_nats(env: Env):
    """A nats-py connection to the TLS-only server, with the test user."""
    context = ssl.create_default_context(cafile=str(env.pki.ca))
    return nats.connect(env.nats_secure.url, tls=context, user=brokers.USER, password=brokers.PASSWORD)


def declare_stream(env: Env) -> None:
    """The operator declares the JetStream stream (file storage)."""
    async def run() -> None:
        nc = await secure_nats(env)
        await nc.jetstream().add_stream(name=JS_STREAM, subjects=[JS_SUBJECTS])
        await nc.close()
    asyncio.run(run())


def secure_nats_publish(env: Env, subject: str, body: str, headers: Dict[str, str]) -> None:
    """Core NATS, on the TLS-only server."""
    async def run() -> None:
        nc = await secure_nats(env)
        await nc.publish(subject, body.encode(), headers=headers)
        await nc.flush()
        await nc.close()
    asyncio.run(run())


def jetstream_publish(env: Env, subject: str, messages: List[Tuple[str, Dict[str, str]]]) -> None:
    """Publishes each message and waits for the stream's acknowledgement."""
    async def run() -> None:
        nc = await secure_nats(env)
        js = nc.jetstream()
        for body, headers in messages:
            await js.publish(subject, body.encode(), headers=headers or None)
        await nc.close()
    asyncio.run(run())


# ------------------------------------------------------------------ senders


def stomp_send(port: int, destination: str, messages: List[Tuple[str, Dict[str, str]]],
               login: Tuple[str, str] = ("", "")) -> None:
    """stomp.py, as a producer: persistent messages whose extra headers are
    what a JMS producer's properties become."""
    conn = stomp.Connection12([("127.0.0.1", port)], vhost="/" if login[0] else None)
    conn.connect(login[0] or None, login[1] or None, wait=True)
    try:
        for body, headers in messages:
            conn.send(destination, body, headers={"persistent": "true", **headers})
        # A receipt on the last DISCONNECT: everything before it was handled.
    finally:
        conn.disconnect(receipt=uid("bye"))


def amqp_publish(rabbit: brokers.RabbitMQ, exchange: str, key: str, messages: List[Tuple[str, Dict[str, Any]]]) -> None:
    with pika.BlockingConnection(pika.URLParameters(rabbit.url)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for body, headers in messages:
            ch.basic_publish(exchange, key, body.encode(),
                             pika.BasicProperties(headers=headers, delivery_mode=2), mandatory=True)


def nats_publish(url: str, subject: str, messages: List[Tuple[str, Dict[str, str]]]) -> None:
    async def run() -> None:
        nc = await nats.connect(url)
        for body, headers in messages:
            await nc.publish(subject, body.encode(), headers=headers or None)
        await nc.flush()
        await nc.close()
    asyncio.run(run())


# ------------------------------------------------------------------ helpers


def browser(env: Env, *channels: str) -> Browser:
    b = Browser(env.cometbox, uid("browser"))
    if channels:
        env.cometbox.subscribe(b.client, *channels)
    return b


def with_data(value: Any):
    return lambda m: m.get("data") == value


