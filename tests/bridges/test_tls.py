"""Bridges over TLS, with credentials: each broker's TLS listener (the
session's brokers, certificates made by brokers.Pki) relays to a browser;
a wrong CA, a wrong server name and bad credentials are refused with an
error naming the table (`bridge[N]`); passwords given by the environment
reach the broker and are never shown.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import List, Tuple

import brokers
from cometbox_server import Cometbox, wait_for
from support import (Env, amqp_publish, browser, jetstream_publish, secure_nats_publish, stomp_send, uid,
                     with_data)


def test_each_tls_source_relays(env: Env) -> None:
    b = browser(env)
    marker = uid("tls")
    sent = {}

    def body(name: str) -> Tuple[str, dict]:
        sent[name] = {"m": marker, "via": name}
        return json.dumps(sent[name]), {"cometbox-client": b.client}

    # Producers use the brokers' plain listeners (NATS: the TLS-only server);
    # what is tested is the bridge's side.
    stomp_send(env.activemq.port, "/queue/cb-tls", [body("stomp-ssl")])
    stomp_send(env.rabbit.stomp_port, "/queue/cb-rstomps", [body("rabbit-stomps")], login=("guest", "guest"))
    amqp_publish(env.rabbit, "", "cb-tls-queue", [body("amqps")])
    secure_nats_publish(env, "cbtls.a", *body("nats-tls"))
    jetstream_publish(env, "cbjs.a", [body("jetstream")])
    data, headers = body("rediss")
    env.redis.cli("XADD", "cb-tls-stream", "*", "data", data, "cometbox-client", headers["cometbox-client"])
    for name, value in sent.items():
        b.wait(with_data(value), timeout=30)
    for name in sent:
        assert env.cometbox.bridge(name)["delivered"] >= 1, name


def test_passwords_are_never_shown(env: Env) -> None:
    """The NATS and Redis passwords come from the file's URL (jetstream) and
    from COMETBOX_BRIDGE__<N>__PASSWORD (nats-tls, rediss): the bridges
    connected with them, and neither the log, /stats nor /metrics holds it."""
    for name in ("nats-tls", "jetstream", "rediss", "amqps"):
        assert env.cometbox.bridge(name)["state"] == "connected", env.cometbox.bridge(name)
    assert env.cometbox.bridge("jetstream")["url"].startswith(f"tls://{brokers.USER}:***@")
    shown = [env.cometbox.log_path.read_text(errors="replace"), json.dumps(env.cometbox.stats()),
             env.cometbox.metrics()]
    for text in shown:
        assert brokers.PASSWORD not in text


def refused_config(env: Env) -> Tuple[str, List[Tuple[str, str]]]:
    """Unnamed bridges (so named `bridge[N]`), each refused, with what its
    error must say."""
    p, user = env.pki, brokers.USER
    ca, other = f'ca_file = "{p.ca}"', f'ca_file = "{p.other_ca}"'
    r = env.rabbit
    unknown_ca = "UnknownIssuer (the broker's certificate is not signed by a trusted CA: set ca_file to its CA)"
    tables = [
        # The system's store does not hold the test CA.
        (f'url = "amqps://guest:guest@127.0.0.1:{r.ssl_port}/%2f"\nsource = "cb-tls-queue"', unknown_ca),
        (f'url = "stomp+ssl://127.0.0.1:{env.activemq.ssl_port}"\nsource = "/queue/x"\n{other}', unknown_ca),
        (f'url = "rediss://{user}:{brokers.PASSWORD}@127.0.0.1:{env.redis.tls_port}"\nsource = "x"\n{other}',
         unknown_ca),
        # The certificate names 127.0.0.1 only.
        (f'url = "tls://{user}:{brokers.PASSWORD}@localhost:{env.nats_secure.port}"\nsource = "x"\n{ca}',
         "not valid for name"),
        (f'url = "amqps://guest:wrong@127.0.0.1:{r.ssl_port}/%2f"\nsource = "cb-tls-queue"\n{ca}', "ACCESS_REFUSED"),
        (f'url = "stomps://127.0.0.1:{r.stomp_ssl_port}/%2f"\nuser = "guest"\npassword = "wrong"\n'
         f'source = "/queue/x"\n{ca}', "Access refused"),
        (f'url = "tls://127.0.0.1:{env.nats_secure.port}"\nuser = "{user}"\npassword = "wrong"\nsource = "x"\n{ca}',
         "authorization violation"),
        (f'url = "rediss://{user}:wrong@127.0.0.1:{env.redis.tls_port}"\nsource = "x"\n{ca}', "authentication failed"),
    ]
    config = '[public]\nlisten = "127.0.0.1:0"\n[ingest]\nlisten = "127.0.0.1:0"\n'
    for table, _ in tables:
        config += f'\n[[bridge]]\n{table}\nchannel = "c"\nmax_backoff = "1s"\n'
    return config, tables


def test_wrong_ca_wrong_name_and_bad_credentials_are_refused_naming_the_table(env: Env) -> None:
    config, tables = refused_config(env)
    server = Cometbox(env.root / "refused-cometbox", config)
    server.start()
    try:
        names = [f"bridge[{i}]" for i in range(len(tables))]
        for name in names:
            wait_for(lambda: server.bridge(name)["failures"] >= 1, 60, f"{name} to fail")
        log = server.log_path.read_text(errors="replace")
        for name, (_, expected) in zip(names, tables):
            status = server.bridge(name)
            assert status["state"] == "disconnected", status
            assert expected.lower() in (status["last_error"] or "").lower(), (name, status)
            line = next((l for l in log.splitlines() if "bridge disconnected" in l and f"={name}" in l), "")
            assert expected.lower() in line.lower(), (name, line)
            print(f"{name}: {status['last_error']}")
        assert brokers.PASSWORD not in log
    finally:
        server.stop()


def test_a_bad_tls_file_stops_startup_naming_the_key(env: Env, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[[bridge]]\nurl = "amqps://127.0.0.1:1"\nsource = "q"\nchannel = "c"\n'
                   f'ca_file = "{env.pki.ca}"\n'
                   f'[[bridge]]\nurl = "rediss://127.0.0.1:1"\nsource = "q"\nchannel = "c"\n'
                   f'client_cert = "{env.pki.client_cert}"\nclient_key = "{tmp_path / "missing.key"}"\n')
    run = subprocess.run([os.environ["COMETBOX_BIN"], "--config", str(bad), "--check-config"],
                         capture_output=True, timeout=30,
                         env={k: v for k, v in os.environ.items() if not k.startswith("COMETBOX_")})
    assert run.returncode == 2, run
    assert re.search(rb"bridge\[1\]\.client_key: .*missing\.key", run.stderr), run.stderr
