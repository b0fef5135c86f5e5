"""Pusher's official Python server SDK (PyPI `pusher` 3.x), unchanged,
pointed at cometbox's ingest listener; every effect is read back through a
real GET /poll on the public listener. run-tests.sh starts the server and
sets PUSHER_SUITE_INGEST, PUSHER_SUITE_PUBLIC, PUSHER_SUITE_APP_ID,
PUSHER_SUITE_KEY and PUSHER_SUITE_SECRET."""

import json
import os
import sys
import threading
import unittest
import urllib.parse
import urllib.request
from pathlib import Path

import pusher
import pusher.errors

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))
from cometbox_testing import wait_for  # noqa: E402  (the repository's shared test support)

INGEST = os.environ["PUSHER_SUITE_INGEST"]
PUBLIC = os.environ["PUSHER_SUITE_PUBLIC"]


def client(secret=None):
    ingest = urllib.parse.urlsplit(INGEST)
    return pusher.Pusher(
        app_id=os.environ["PUSHER_SUITE_APP_ID"],
        key=os.environ["PUSHER_SUITE_KEY"],
        secret=secret or os.environ["PUSHER_SUITE_SECRET"],
        ssl=False,
        host=ingest.hostname,
        port=ingest.port,
    )


def token(client_id, channels):
    query = urllib.parse.urlencode([("client", client_id)] + [("channel", c) for c in channels])
    request = urllib.request.Request(
        f"{INGEST}/token?{query}", method="POST", headers={"Accept": "text/plain"}, data=b""
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return reply.read().decode().strip()


def poll(client_id, channels=(), timeout=0):
    query = {"token": token(client_id, list(channels)), "timeout": str(timeout)}
    if channels:
        query["channels"] = ",".join(channels)
    with urllib.request.urlopen(f"{PUBLIC}/poll?{urllib.parse.urlencode(query)}", timeout=timeout + 10) as reply:
        return json.load(reply)


def open_polls(client_id):
    try:
        with urllib.request.urlopen(f"{INGEST}/clients/{client_id}", timeout=10) as reply:
            return json.load(reply)["open_polls"]
    except urllib.error.HTTPError:
        return 0


def held_poll(client_id, channels):
    """A poll waiting in the background, once the server holds it."""
    result = {}

    def run():
        try:
            result["reply"] = poll(client_id, channels, timeout=10)
        except Exception as e:  # reported by the caller
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def held():
        if "error" in result:
            raise AssertionError(f"{client_id} never held an open poll: {result['error']}")
        return open_polls(client_id) >= 1

    wait_for(held, 5, f"{client_id} holding an open poll")

    def wait():
        thread.join(15)
        if "error" in result:
            raise result["error"]
        return result["reply"]

    return wait


class PythonSdk(unittest.TestCase):
    def test_trigger_wakes_a_waiting_poll(self):
        wait = held_poll("py-one", ["py-news"])
        self.assertEqual(client().trigger("py-news", "headline", {"title": "hi"}), {})
        messages = wait()["messages"]
        self.assertEqual(len(messages), 1, messages)
        self.assertEqual(
            (messages[0]["channel"], messages[0]["event"], messages[0]["data"]),
            ("py-news", "headline", {"title": "hi"}),
        )

    def test_trigger_to_several_channels_with_socket_id(self):
        poll("py-multi", ["py-multi-1", "py-multi-2"])
        client().trigger(["py-multi-1", "py-multi-2"], "both", "text", socket_id="42.7")
        messages = poll("py-multi")["messages"]
        self.assertEqual(
            [(m["channel"], m["data"], m["exclude"]) for m in messages],
            [("py-multi-1", "text", "42.7"), ("py-multi-2", "text", "42.7")],
        )

    def test_trigger_batch(self):
        poll("py-batch", ["py-batch-1", "py-batch-2"])
        client().trigger_batch(
            [
                {"channel": "py-batch-1", "name": "first", "data": {"i": 1}},
                {"channel": "py-batch-2", "name": "second", "data": {"i": 2}},
            ]
        )
        messages = poll("py-batch")["messages"]
        self.assertEqual(
            [(m["channel"], m["event"], m["data"]) for m in messages],
            [("py-batch-1", "first", {"i": 1}), ("py-batch-2", "second", {"i": 2})],
        )

    def test_channels_info(self):
        poll("py-c1", ["presence-py-room", "py-elsewhere"])
        poll("py-c2", ["presence-py-room"])
        info = client().channels_info(prefix_filter="presence-py-", attributes=["user_count"])
        self.assertEqual(info, {"channels": {"presence-py-room": {"user_count": 2}}})
        everything = client().channels_info()
        self.assertIn("py-elsewhere", everything["channels"])

    def test_channel_info(self):
        poll("py-info", ["py-info-ch"])
        info = client().channel_info("py-info-ch", ["subscription_count"])
        self.assertEqual(info, {"occupied": True, "subscription_count": 1})
        self.assertEqual(client().channel_info("py-nobody"), {"occupied": False})

    def test_users_info(self):
        poll("py-u1", ["presence-py-users"])
        poll("py-u2", ["presence-py-users"])
        self.assertEqual(
            client().users_info("presence-py-users"), {"users": [{"id": "py-u1"}, {"id": "py-u2"}]}
        )

    def test_wrong_secret_is_401_and_delivers_nothing(self):
        poll("py-denied", ["py-denied-ch"])
        with self.assertRaises(pusher.errors.PusherBadAuth):
            client("not-the-secret").trigger("py-denied-ch", "ev", {"x": 1})
        self.assertEqual(poll("py-denied")["messages"], [])

    def test_webhooks_are_valid_by_the_sdks_helper(self):
        # The Node pages (run first by run-tests.sh) made them; the site's
        # endpoint (webhook_receiver.py) logged each request as it came.
        with open(os.environ["PUSHER_SUITE_WEBHOOKS"], encoding="utf-8") as log:
            requests = [json.loads(line) for line in log if line.strip()]
        self.assertTrue(requests, "no webhook arrived: run-tests.sh runs the Node pages first")
        key = os.environ["PUSHER_SUITE_KEY"]
        names = set()
        for request in requests:
            headers = request["headers"]
            self.assertEqual(headers["x-pusher-key"], key)
            hook = client().validate_webhook(key, headers["x-pusher-signature"], request["body"])
            self.assertIsNotNone(hook, request)
            names.update(event["name"] for event in hook["events"])
        self.assertTrue({"channel_occupied", "channel_vacated", "member_added"} <= names, names)
        # A changed body, or another app's secret, is refused.
        first = requests[0]
        signature = first["headers"]["x-pusher-signature"]
        self.assertIsNone(client().validate_webhook(key, signature, first["body"].replace("channel", "chanel")))
        self.assertIsNone(client("another-secret").validate_webhook(key, signature, first["body"]))


if __name__ == "__main__":
    unittest.main()
