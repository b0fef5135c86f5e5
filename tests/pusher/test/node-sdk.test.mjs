// Pusher's official Node server SDK (npm `pusher` 5.x), unchanged, pointed
// at cometbox's ingest listener; every effect is read back through a real
// GET /poll on the public listener. run-tests.sh starts the server and sets
// PUSHER_SUITE_INGEST, PUSHER_SUITE_PUBLIC, PUSHER_SUITE_APP_ID,
// PUSHER_SUITE_KEY and PUSHER_SUITE_SECRET.
import { test } from "node:test";
import assert from "node:assert/strict";
import Pusher from "pusher";

import { env, openPoll, pollNow, subscribeByPoll } from "./lib.mjs";

const ingest = new URL(env("PUSHER_SUITE_INGEST"));

function pusher(secret = env("PUSHER_SUITE_SECRET")) {
  return new Pusher({
    appId: env("PUSHER_SUITE_APP_ID"),
    key: env("PUSHER_SUITE_KEY"),
    secret,
    host: ingest.hostname,
    port: ingest.port,
    useTLS: false,
  });
}

test("trigger to one channel wakes a waiting poll", async () => {
  const poll = await openPoll("node-one", ["node-news"]);
  const res = await pusher().trigger("node-news", "headline", { title: "hello" });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});
  const reply = await poll.reply;
  assert.equal(reply.messages.length, 1, JSON.stringify(reply));
  const [m] = reply.messages;
  assert.equal(m.channel, "node-news");
  assert.equal(m.event, "headline");
  assert.deepEqual(m.data, { title: "hello" });
  assert.equal(m.exclude, undefined);
});

test("trigger to several channels reaches each channel's subscriber", async () => {
  const a = await openPoll("node-multi-a", ["node-multi-1"]);
  const b = await openPoll("node-multi-b", ["node-multi-2"]);
  const res = await pusher().trigger(["node-multi-1", "node-multi-2"], "both", "plain text");
  assert.equal(res.status, 200);
  for (const [poll, channel] of [[a, "node-multi-1"], [b, "node-multi-2"]]) {
    const reply = await poll.reply;
    assert.equal(reply.messages.length, 1, JSON.stringify(reply));
    assert.equal(reply.messages[0].channel, channel);
    assert.equal(reply.messages[0].event, "both");
    // The SDK sends a string as it is; not JSON, it arrives as that string.
    assert.equal(reply.messages[0].data, "plain text");
  }
});

test("trigger with socket_id carries it as exclude", async () => {
  const poll = await openPoll("node-sock", ["node-sock-ch"]);
  const res = await pusher().trigger("node-sock-ch", "ev", { n: 1 }, { socket_id: "1234.5678" });
  assert.equal(res.status, 200);
  const reply = await poll.reply;
  assert.equal(reply.messages[0].exclude, "1234.5678");
  assert.deepEqual(reply.messages[0].data, { n: 1 });
});

test("triggerBatch delivers every event, applied as one batch", async () => {
  await subscribeByPoll("node-batch", ["node-batch-1", "node-batch-2"]);
  const res = await pusher().triggerBatch([
    { channel: "node-batch-1", name: "first", data: { i: 1 } },
    { channel: "node-batch-2", name: "second", data: { i: 2 } },
  ]);
  assert.equal(res.status, 200);
  // Answered once both are applied: one poll finds both.
  const { messages } = await pollNow("node-batch");
  assert.deepEqual(
    messages.map((m) => [m.channel, m.event, m.data.i]),
    [["node-batch-1", "first", 1], ["node-batch-2", "second", 2]],
  );
});

test("get /channels with filter_by_prefix and user_count", async () => {
  await subscribeByPoll("node-p1", ["presence-node-room", "node-other"]);
  await subscribeByPoll("node-p2", ["presence-node-room"]);
  const res = await pusher().get({
    path: "/channels",
    params: { filter_by_prefix: "presence-node-", info: "user_count" },
  });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { channels: { "presence-node-room": { user_count: 2 } } });
  const all = await (await pusher().get({ path: "/channels" })).json();
  assert.ok("node-other" in all.channels, JSON.stringify(all));
  assert.ok("presence-node-room" in all.channels, JSON.stringify(all));
});

test("get channel info", async () => {
  await subscribeByPoll("node-info", ["node-info-ch"]);
  const res = await pusher().get({
    path: "/channels/node-info-ch",
    params: { info: "subscription_count" },
  });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { occupied: true, subscription_count: 1 });
  const empty = await (await pusher().get({ path: "/channels/node-nobody" })).json();
  assert.deepEqual(empty, { occupied: false });
});

test("presence users", async () => {
  await subscribeByPoll("node-u1", ["presence-node-users"]);
  await subscribeByPoll("node-u2", ["presence-node-users"]);
  const res = await pusher().get({ path: "/channels/presence-node-users/users" });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { users: [{ id: "node-u1" }, { id: "node-u2" }] });
});

test("a wrong secret is a 401 the SDK reports, and nothing is delivered", async () => {
  await subscribeByPoll("node-denied", ["node-denied-ch"]);
  await assert.rejects(
    pusher("not-the-secret").trigger("node-denied-ch", "ev", { x: 1 }),
    (err) => {
      assert.equal(err.status, 401, String(err));
      assert.match(err.body, /signature/i);
      return true;
    },
  );
  const reply = await pollNow("node-denied");
  assert.deepEqual(reply.messages, []);
});
