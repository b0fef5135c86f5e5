"""Relay throughput of the acknowledged bridges (Redis stream, AMQP queue,
ActiveMQ STOMP queue) with the disk store (fsync = "always"): N messages
sent by each broker's ordinary client, timed until /stats says all were
stored. Not part of the suite; run it through the suite's venv:

    COMETBOX_BIN=$PWD/target/debug/cometbox <venv>/bin/python tests/bridges/measure_throughput.py [N]

(run-tests.sh makes such a venv; `pip install -r tests/bridges/requirements.txt pytest`
into any venv works too). The AMQP figure is bounded by the producer, which
waits for a publisher confirm per message.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cometbox_server import Cometbox, wait_for  # noqa: E402
from test_bridges import Env, amqp_publish, declare_queue, pipe_script, stomp_send  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
root = Path(tempfile.mkdtemp(prefix="cbmeasure-"))
e = Env(root)
for b in e.all:
    b.start()
try:
    for b in e.all:
        b.wait_ready(180)
    declare_queue(e.rabbit)
    e.cometbox = Cometbox(root / "cometbox", e.config())
    e.cometbox.start()
    for n in ["redis-stream", "amqp-queue", "stomp-queue"]:
        e.cometbox.wait_state(n, "connected", 60)
    senders = [
        ("redis-stream", lambda bodies: subprocess.run(["redis-cli", "-p", str(e.redis.port)],
                                                       input=pipe_script(bodies, "m").encode(),
                                                       check=True, capture_output=True)),
        ("amqp-queue", lambda bodies: amqp_publish(e.rabbit, "", "cb-queue", bodies)),
        ("stomp-queue", lambda bodies: stomp_send(e.activemq.port, "/queue/cb-queue", bodies)),
    ]
    for name, send in senders:
        bodies = [(json.dumps({"seq": i}), {"cometbox-client": f"m-{name}"}) for i in range(N)]
        before = e.cometbox.bridge(name)["delivered"]
        t0 = time.monotonic()
        send(bodies)
        t1 = time.monotonic()
        wait_for(lambda: e.cometbox.bridge(name)["delivered"] >= before + N, 600, name, interval=0.01)
        t2 = time.monotonic()
        print(f"{name}: {N} messages; producer took {t1 - t0:.1f} s; all stored {t2 - t0:.1f} s "
              f"after the first was sent ({N / (t2 - t0):.0f} msg/s end to end)", flush=True)
finally:
    if hasattr(e, "cometbox"):
        e.cometbox.stop()
    for b in e.all:
        b.stop()
    e.rabbit.stop_epmd()
