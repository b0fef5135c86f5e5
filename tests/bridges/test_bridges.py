"""`[[bridge]]` end to end: messages sent by each broker's ordinary clients
arrive in a browser's GET /poll, routed by header; acknowledged sources lose
nothing to a SIGKILL of cometbox; every bridge reconnects after its broker
restarts. The brokers and cometbox are the session's (conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from typing import Dict, List, Tuple

import pytest

import brokers
from cometbox_server import Browser, Cometbox, wait_for
from support import (BRIDGES, Env, amqp_publish, browser, jetstream_publish, nats_publish, secure_nats_publish,
                     stomp_send, uid, with_data)


# --------------------------------------------------------------------- tests


def test_redis_pubsub_reaches_a_polling_browser(env: Env) -> None:
    b = browser(env, "redis-ps")
    marker = uid("ps")
    env.redis.cli("PUBLISH", "cb-pubsub", json.dumps({"m": marker}))
    [m] = b.wait(with_data({"m": marker}))
    assert m["channel"] == "redis-ps" and m["event"] == "ps"


def test_redis_stream_routes_by_field_and_skips_invalid(env: Env) -> None:
    b = browser(env, "room-r")
    direct = browser(env)
    before = env.cometbox.bridge("redis-stream")["skipped"]
    env.redis.cli("XADD", "cb-stream", "*", "data", "{not json", "cometbox-channel", "room-r")
    env.redis.cli("XADD", "cb-stream", "*", "data", '{"k":1}', "cometbox-channel", "room-r", "cometbox-event", "ev")
    env.redis.cli("XADD", "cb-stream", "*", "data", '"hi"', "cometbox-client", direct.client)
    [m] = b.wait(with_data({"k": 1}))
    assert m["channel"] == "room-r" and m["event"] == "ev"
    [d] = direct.wait(with_data("hi"))
    assert "channel" not in d
    assert env.cometbox.bridge("redis-stream")["skipped"] == before + 1
    assert not [m for m in b.messages if m.get("data") == "{not json"]
    # Acknowledged: nothing left pending in the group.
    wait_for(lambda: env.redis.cli("XPENDING", "cb-stream", "cometbox").startswith("0"), 10, "XPENDING 0")


def test_nats_headers_route_channel_and_event(env: Env) -> None:
    b = browser(env, "room-n", "nats")
    marker = uid("n")
    nats_publish(env.nats.url, "cb.x", [
        (json.dumps({"to": "room", "m": marker}), {"cometbox-channel": "room-n", "cometbox-event": "e1"}),
        (json.dumps({"to": "default", "m": marker}), {}),
    ])
    [room] = b.wait(with_data({"to": "room", "m": marker}))
    assert room["channel"] == "room-n" and room["event"] == "e1"
    [default] = b.wait(with_data({"to": "default", "m": marker}))
    assert default["channel"] == "nats" and "event" not in default


def test_amqp_queue_and_exchange(env: Env) -> None:
    b = browser(env, "room-a", "amqp-topic")
    direct = browser(env)
    marker = uid("a")
    amqp_publish(env.rabbit, "", "cb-queue", [
        (json.dumps({"m": marker}), {"cometbox-channel": "room-a", "cometbox-event": "amqp-ev"}),
        (json.dumps({"m": marker, "direct": True}), {"cometbox-client": direct.client}),
    ])
    amqp_publish(env.rabbit, "amq.topic", "cb.prices", [(f"plain text {marker}", {})])
    [m] = b.wait(with_data({"m": marker}))
    assert m["channel"] == "room-a" and m["event"] == "amqp-ev"
    direct.wait(with_data({"m": marker, "direct": True}))
    [t] = b.wait(with_data(f"plain text {marker}"))
    assert t["channel"] == "amqp-topic"


def test_activemq_stomp_queue_and_topic(env: Env) -> None:
    b = browser(env, "room-s", "stomp-topic")
    direct = browser(env)
    marker = uid("s")
    stomp_send(env.activemq.port, "/queue/cb-queue", [
        (json.dumps({"m": marker}), {"cometbox-channel": "room-s", "cometbox-event": "jms"}),
        (json.dumps({"m": marker, "direct": True}), {"cometbox-client": direct.client}),
        ("not json", {"cometbox-channel": "room-s"}),
    ])
    stomp_send(env.activemq.port, "/topic/cb-topic", [(json.dumps({"tick": marker}), {})])
    [m] = b.wait(with_data({"m": marker}))
    assert m["channel"] == "room-s" and m["event"] == "jms"
    direct.wait(with_data({"m": marker, "direct": True}))
    [t] = b.wait(with_data({"tick": marker}))
    assert t["channel"] == "stomp-topic" and t["event"] == "tick"
    wait_for(lambda: env.cometbox.bridge("stomp-queue")["skipped"] >= 1, 10, "the invalid STOMP message counted")


def test_rabbitmq_stomp_plugin(env: Env) -> None:
    b = browser(env, "room-rs")
    marker = uid("rs")
    stomp_send(env.rabbit.stomp_port, "/queue/cb-rstomp", [
        (json.dumps({"m": marker}), {"cometbox-channel": "room-rs", "cometbox-event": "rs"}),
    ], login=("guest", "guest"))
    [m] = b.wait(with_data({"m": marker}))
    assert m["channel"] == "room-rs" and m["event"] == "rs"


def test_stats_and_metrics_show_each_bridge(env: Env) -> None:
    stats = env.cometbox.stats()
    names = [b["name"] for b in stats["bridges"]]
    assert names == BRIDGES
    for b in stats["bridges"]:
        assert b["state"] == "connected" and b["connects"] >= 1
    assert "guest:***@" in env.cometbox.bridge("amqp-queue")["url"]
    text = env.cometbox.metrics()
    assert re.search(r'cometbox_bridge_state\{bridge="nats",state="connected"\} 1', text), text
    assert re.search(r'cometbox_bridge_delivered_total\{bridge="redis-stream"\} [1-9]', text), text


def test_a_bad_bridge_config_stops_startup_naming_the_key(env: Env) -> None:
    bad = env.root / "bad.toml"
    bad.write_text('[[bridge]]\nurl = "nats://127.0.0.1:1"\nsource = "s"\nchannel = "c"\n'
                   '[[bridge]]\nurl = "http://127.0.0.1:1"\nsource = "s"\nchannel = "c"\n')
    run = subprocess.run([os.environ["COMETBOX_BIN"], "--config", str(bad), "--check-config"],
                         capture_output=True, timeout=30, env={k: v for k, v in os.environ.items() if not k.startswith("COMETBOX_")})
    assert run.returncode == 2
    assert b"bridge[1].url" in run.stderr, run.stderr


KILL_COUNT = 1500


@pytest.mark.parametrize("source", ["stomp-queue", "amqp-queue", "redis-stream", "jetstream"])
def test_sigkill_mid_stream_loses_nothing(env: Env, source: str) -> None:
    """A producer fills the queue; kill -9 cometbox while it relays, restart
    it on the same disk store: every message the broker had is in the
    client's mailbox (duplicates allowed: at-least-once, and counted)."""
    client = uid("kill")
    bodies = [(json.dumps({"run": client, "seq": i}), {"cometbox-client": client}) for i in range(KILL_COUNT)]
    before = env.cometbox.bridge(source)["delivered"]
    def send() -> None:
        if source == "stomp-queue":
            stomp_send(env.activemq.port, "/queue/cb-queue", bodies)
        elif source == "amqp-queue":
            amqp_publish(env.rabbit, "", "cb-queue", bodies)
        elif source == "jetstream":
            # Over TLS, with a password: the bridge reads it so too.
            jetstream_publish(env, "cbjs.kill", bodies)
        else:
            # redis-cli reads one command per line from stdin.
            subprocess.run(["redis-cli", "-p", str(env.redis.port)], input=pipe_script(bodies, client).encode(),
                           check=True, capture_output=True, timeout=60)

    # The producer goes on while cometbox is killed and restarted.
    sender = threading.Thread(target=send)
    sender.start()
    try:
        wait_for(lambda: env.cometbox.bridge(source)["delivered"] >= before + 50, 60,
                 f"{source} to start relaying", interval=0.005)
        at_kill = env.cometbox.bridge(source)["delivered"] - before
        env.cometbox.kill()
    finally:
        sender.join(120)
    assert at_kill < KILL_COUNT, "everything was relayed before the kill: nothing was tested"
    restarted = time.monotonic()
    env.cometbox.start()
    env.cometbox.wait_state(source, "connected", 60)
    b = Browser(env.cometbox, client)
    mine = lambda m: isinstance(m.get("data"), dict) and m["data"].get("run") == client
    seen: Dict[int, int] = {}

    def count() -> bool:
        b.poll()
        seen.clear()
        for m in b.messages:
            if mine(m):
                seen[m["data"]["seq"]] = seen.get(m["data"]["seq"], 0) + 1
        return len(seen) == KILL_COUNT

    try:
        wait_for(count, 120, "every message", interval=0)
    except AssertionError:
        pass  # reported below, with what is missing
    missing = sorted(set(range(KILL_COUNT)) - set(seen))
    duplicates = sum(n - 1 for n in seen.values())
    print(f"{source}: {KILL_COUNT} sent, {len(seen)} distinct delivered, {duplicates} duplicates after SIGKILL "
          f"at {at_kill} relayed; the rest relayed and polled {time.monotonic() - restarted:.1f} s after the restart")
    assert not missing, f"lost {len(missing)}: {missing[:20]}"


def pipe_script(bodies: List[Tuple[str, Dict[str, str]]], client: str) -> str:
    def quote(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "".join(f"XADD cb-stream * data {quote(body)} cometbox-client {client}\n" for body, _ in bodies)


@pytest.mark.parametrize("broker", ["redis", "nats", "nats_secure", "rabbit", "activemq"])
def test_a_restarted_broker_is_reconnected(env: Env, broker: str) -> None:
    target: brokers.Broker = getattr(env, broker)
    names = {
        "redis": ["redis-pubsub", "redis-stream"],
        "nats": ["nats"],
        "nats_secure": ["nats-tls", "jetstream"],
        "rabbit": ["amqp-queue", "amqp-exchange", "rabbit-stomp"],
        "activemq": ["stomp-queue", "stomp-topic"],
    }[broker]
    connects = {n: env.cometbox.bridge(n)["connects"] for n in names}
    target.stop()
    for n in names:
        env.cometbox.wait_state(n, "disconnected", 60)
    assert env.cometbox.stats()["bridges"]  # ingest and /stats still answer
    target.start()
    target.wait_ready(180)
    for n in names:
        wait_for(lambda: env.cometbox.bridge(n)["connects"] > connects[n] and env.cometbox.bridge(n)["state"] == "connected",
                 90, f"{n} to reconnect: {env.cometbox.bridge(n)}")
    b = browser(env, "after-restart")
    marker = uid(broker)
    payload = json.dumps({"again": marker})
    if broker == "redis":
        env.redis.cli("PUBLISH", "cb-pubsub", payload)
        env.redis.cli("XADD", "cb-stream", "*", "data", payload, "cometbox-channel", "after-restart")
        pubsub = browser(env, "redis-ps")
        env.redis.cli("PUBLISH", "cb-pubsub", payload)
        pubsub.wait(with_data({"again": marker}))
    elif broker == "nats":
        nats_publish(env.nats.url, "cb.y", [(payload, {"cometbox-channel": "after-restart"})])
    elif broker == "nats_secure":
        # JetStream first (its stream survived on disk), then core NATS.
        jetstream_publish(env, "cbjs.y", [(payload, {"cometbox-channel": "after-restart"})])
        b.wait(with_data({"again": marker}), timeout=60)
        marker = uid("nats-tls")
        payload = json.dumps({"again": marker})
        secure_nats_publish(env, "cbtls.y", payload, {"cometbox-channel": "after-restart"})
    elif broker == "rabbit":
        amqp_publish(env.rabbit, "", "cb-queue", [(payload, {"cometbox-channel": "after-restart"})])
        b.wait(with_data({"again": marker}), timeout=60)
        marker = uid("rabbit-stomp")
        payload = json.dumps({"again": marker})
        stomp_send(env.rabbit.stomp_port, "/queue/cb-rstomp", [(payload, {"cometbox-channel": "after-restart"})],
                   login=("guest", "guest"))
    else:
        stomp_send(env.activemq.port, "/queue/cb-queue", [(payload, {"cometbox-channel": "after-restart"})])
    b.wait(with_data({"again": marker}), timeout=60)
    log = env.cometbox.log_path.read_text(errors="replace")
    assert "bridge disconnected" in log and "bridge connected" in log


def test_a_broker_down_at_start_is_retried_and_logged_once(env: Env) -> None:
    """cometbox starts while its broker is down: it serves, the bridge is
    disconnected and retried (logged once, not per attempt), and connects
    when the broker comes up."""
    late = brokers.Redis(env.root / "late")
    server = Cometbox(env.root / "late-cometbox", f"""
[public]
listen = "127.0.0.1:0"
[ingest]
listen = "127.0.0.1:0"
[[bridge]]
name = "late"
url = "{late.url}"
source = "late"
channel = "late"
max_backoff = "200ms"
""")
    server.start()
    try:
        down = wait_for(lambda: (lambda b: b if b["failures"] >= 5 else None)(server.bridge("late")), 60,
                        "several failed attempts")
        assert down["state"] == "disconnected" and "connect" in down["last_error"]
        assert server.stats()["clients"] == 0  # ingest and /stats answer meanwhile
        log = server.log_path.read_text()
        assert log.count("bridge disconnected") == 1, log
        late.start()
        try:
            late.wait_ready(60)
            server.wait_state("late", "connected", 60)
            b = Browser(server, uid("late"))
            server.subscribe(b.client, "late")
            late.cli("PUBLISH", "late", '{"late": true}')
            b.wait(with_data({"late": True}))
        finally:
            late.stop()
    finally:
        server.stop()
