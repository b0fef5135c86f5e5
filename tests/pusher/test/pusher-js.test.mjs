// pusher-js 8 and Laravel Echo 2, unchanged, in Node against cometbox's
// GET /app/<key>: the page side of Pusher. Channel authorisation is what a
// site's /broadcasting/auth does: the official `pusher` server SDK's
// authorizeChannel with the app secret. Events come from the official SDK's
// trigger (Pusher's HTTP API on the ingest listener), from cometbox's own
// XML ingest, and from other pages (client events / whispers).

import { test } from "node:test";
import assert from "node:assert/strict";
import Pusher from "pusher-js";
import PusherServer from "pusher";
import EchoModule from "laravel-echo";
import { readFileSync } from "node:fs";
import { env, openPoll } from "./lib.mjs";

const Echo = EchoModule.default ?? EchoModule;
const publicUrl = new URL(env("PUSHER_SUITE_PUBLIC"));
const ingestUrl = new URL(env("PUSHER_SUITE_INGEST"));
const KEY = env("PUSHER_SUITE_KEY");
const SECRET = env("PUSHER_SUITE_SECRET");

const server = new PusherServer({
  appId: env("PUSHER_SUITE_APP_ID"),
  key: KEY,
  secret: SECRET,
  host: ingestUrl.hostname,
  port: ingestUrl.port,
  useTLS: false,
});

/** What a site's auth endpoint answers, signed with `secret`. */
function authorizer(secret, user) {
  const signer = new PusherServer({ appId: "1", key: KEY, secret, useTLS: false });
  return (params, callback) => {
    const { socketId, channelName } = params;
    const presence = channelName.startsWith("presence-") ? user : undefined;
    callback(null, signer.authorizeChannel(socketId, channelName, presence));
  };
}

/** A page's pusher-js pointed at cometbox. */
function page({ secret = SECRET, user } = {}) {
  return new Pusher(KEY, {
    cluster: "mt1",
    wsHost: publicUrl.hostname,
    wsPort: Number(publicUrl.port),
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: { customHandler: authorizer(secret, user) },
  });
}

/** Resolves with the first call of `on(name, cb)`'s callback, within 10 s. */
function first(emitter, name, what = name) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} within 10 s`)), 10000);
    emitter.bind(name, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

function connected(pusher) {
  if (pusher.connection.state === "connected") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("not connected within 10 s")), 10000);
    pusher.connection.bind("connected", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

test("pusher-js: a public channel gets the SDK's trigger and an XML ingest message", async () => {
  const pusher = page();
  try {
    await connected(pusher);
    assert.match(pusher.connection.socket_id, /^\d+\.\d+$/);
    const channel = pusher.subscribe("orders");
    await first(channel, "pusher:subscription_succeeded");

    const shipped = first(channel, "shipped");
    await server.trigger("orders", "shipped", { id: 7 });
    assert.deepEqual((await shipped)[0], { id: 7 });

    const xml = first(channel, "packed");
    const res = await fetch(`${ingestUrl}`, {
      method: "POST",
      headers: { "content-type": "application/xml" },
      body: '<message channel="orders" event="packed">{"id":8}</message>',
    });
    assert.equal(res.status, 200, await res.text());
    assert.deepEqual((await xml)[0], { id: 8 });
  } finally {
    pusher.disconnect();
  }
});

test("pusher-js: socket_id excludes the sender; a Pusher event reaches /poll too", async () => {
  const one = page();
  const two = page();
  try {
    await Promise.all([connected(one), connected(two)]);
    const c1 = one.subscribe("news");
    const c2 = two.subscribe("news");
    await Promise.all([first(c1, "pusher:subscription_succeeded"), first(c2, "pusher:subscription_succeeded")]);
    const poll = await openPoll("pusher-js-reader", ["news"]);
    let oneGot = 0;
    c1.bind("flash", () => oneGot++);
    const twoGets = first(c2, "flash");
    await server.trigger("news", "flash", { n: 1 }, { socket_id: one.connection.socket_id });
    assert.deepEqual((await twoGets)[0], { n: 1 });
    const reply = await poll.reply;
    assert.equal(reply.messages[0].event, "flash");
    assert.deepEqual(reply.messages[0].data, { n: 1 });
    await delay(300);
    assert.equal(oneGot, 0, "the excluded socket got nothing");
  } finally {
    one.disconnect();
    two.disconnect();
  }
});

test("pusher-js: private channels are authorised; a forged signature is refused", async () => {
  const good = page();
  const forged = page({ secret: "not-the-secret" });
  try {
    await Promise.all([connected(good), connected(forged)]);
    const ok = good.subscribe("private-orders");
    await first(ok, "pusher:subscription_succeeded");
    const bad = forged.subscribe("private-orders");
    const [error] = await first(bad, "pusher:subscription_error");
    assert.equal(error.status, 401, JSON.stringify(error));

    let forgedGot = 0;
    bad.bind("shipped", () => forgedGot++);
    const got = first(ok, "shipped");
    await server.trigger("private-orders", "shipped", "plain text");
    assert.equal((await got)[0], "plain text");
    await delay(300);
    assert.equal(forgedGot, 0);
  } finally {
    good.disconnect();
    forged.disconnect();
  }
});

test("pusher-js: presence members, member events, client events and the users API", async () => {
  const ann = page({ user: { user_id: "ann", user_info: { name: "Ann" } } });
  const bob = page({ user: { user_id: "bob", user_info: { name: "Bob" } } });
  try {
    await Promise.all([connected(ann), connected(bob)]);
    const annRoom = ann.subscribe("presence-room");
    const [annMembers] = await first(annRoom, "pusher:subscription_succeeded");
    assert.equal(annMembers.count, 1);
    assert.equal(annMembers.me.id, "ann");

    const added = first(annRoom, "pusher:member_added");
    const bobRoom = bob.subscribe("presence-room");
    const [bobMembers] = await first(bobRoom, "pusher:subscription_succeeded");
    assert.equal(bobMembers.count, 2);
    assert.deepEqual(bobMembers.get("ann").info, { name: "Ann" });
    const [member] = await added;
    assert.equal(member.id, "bob");
    assert.deepEqual(member.info, { name: "Bob" });

    const users = await server.get({ path: "/channels/presence-room/users" });
    assert.equal(users.status, 200);
    const ids = (await users.json()).users.map((u) => u.id).sort();
    assert.deepEqual(ids, ["ann", "bob"], "the users the sockets signed in as");
    const info = await server.get({ path: "/channels/presence-room", params: { info: "user_count,subscription_count" } });
    const counts = await info.json();
    assert.equal(counts.user_count, 2, JSON.stringify(counts));
    assert.equal(counts.occupied, true);

    const typing = first(annRoom, "client-typing");
    bobRoom.trigger("client-typing", { who: "bob" });
    assert.deepEqual((await typing)[0], { who: "bob" });

    const removed = first(annRoom, "pusher:member_removed");
    bob.disconnect();
    assert.equal((await removed)[0].id, "bob");
  } finally {
    ann.disconnect();
    bob.disconnect();
  }
});

test("Laravel Echo: listen on a private channel, join a presence channel, whisper", async () => {
  const options = (user) => ({
    broadcaster: "pusher",
    key: KEY,
    cluster: "mt1",
    wsHost: publicUrl.hostname,
    wsPort: Number(publicUrl.port),
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    Pusher,
    authorizer: (channel) => ({
      authorize: (socketId, callback) =>
        authorizer(SECRET, user)({ socketId, channelName: channel.name }, callback),
    }),
  });
  const echo = new Echo(options({ user_id: "1", user_info: { name: "Taylor" } }));
  const other = new Echo(options({ user_id: "2", user_info: { name: "Jess" } }));
  try {
    const shipped = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no OrderShipped within 10 s")), 10000);
      echo.private("orders.1").listen("OrderShipped", (e) => {
        clearTimeout(timer);
        resolve(e);
      });
    });
    const here = new Promise((resolve) => echo.join("chat").here(resolve));
    const joining = new Promise((resolve) => echo.join("chat").joining(resolve));
    const whisper = new Promise((resolve) => echo.join("chat").listenForWhisper("typing", resolve));
    await here;
    const otherHere = new Promise((resolve) => other.join("chat").here(resolve));
    const members = await otherHere;
    assert.deepEqual(members.map((m) => m.name).sort(), ["Jess", "Taylor"]);
    assert.equal((await joining).name, "Jess");

    // What Laravel's broadcaster sends: the event class name, on private-orders.1.
    await delay(200);
    await server.trigger("private-orders.1", "App\\Events\\OrderShipped", { order: { id: 1 } });
    assert.deepEqual(await shipped, { order: { id: 1 } });

    other.join("chat").whisper("typing", { name: "Jess" });
    assert.deepEqual(await whisper, { name: "Jess" });
  } finally {
    echo.disconnect();
    other.disconnect();
  }
});

/** The webhooks webhook_receiver.py got so far: {headers, body} each. */
function webhooksReceived() {
  const text = readFileSync(env("PUSHER_SUITE_WEBHOOKS"), { encoding: "utf8", flag: "a+" });
  return text.split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

test("webhooks: what a page does arrives at the site, valid by the SDK's webhook helper", async () => {
  const channel = `presence-webhooks-${Date.now()}`;
  const pusher = page({ user: { user_id: "wh-1", user_info: { name: "Wendy" } } });
  let socketId;
  try {
    await connected(pusher);
    socketId = pusher.connection.socket_id;
    const presence = pusher.subscribe(channel);
    await first(presence, "pusher:subscription_succeeded");
    assert.ok(presence.trigger("client-hello", { x: 1 }));
    await delay(200);
  } finally {
    pusher.disconnect();
  }
  const ours = async () => {
    for (let i = 0; i < 100; i++) {
      const events = webhooksReceived()
        .map((request) => server.webhook({ headers: request.headers, rawBody: request.body }))
        .filter((hook) => hook.getEvents().some((e) => e.channel === channel));
      if (events.some((hook) => hook.getEvents()[0].name === "channel_vacated")) return events;
      await delay(100);
    }
    throw new Error(`no channel_vacated for ${channel} within 10 s: ${JSON.stringify(webhooksReceived())}`);
  };
  const hooks = await ours();
  for (const hook of hooks) {
    assert.ok(hook.isValid(), `the SDK finds it valid: ${JSON.stringify(hook.getData())}`);
    assert.ok(hook.getTime() instanceof Date);
  }
  const events = hooks.map((hook) => hook.getEvents()[0]);
  assert.deepEqual(events, [
    { name: "channel_occupied", channel },
    { name: "member_added", channel, user_id: "wh-1" },
    { name: "client_event", channel, event: "client-hello", data: '{"x":1}', socket_id: socketId, user_id: "wh-1" },
    { name: "member_removed", channel, user_id: "wh-1" },
    { name: "channel_vacated", channel },
  ]);
  // The helper refuses a body changed on the way, and another app's secret.
  const request = webhooksReceived().find((r) => r.body.includes(channel));
  const tampered = server.webhook({ headers: request.headers, rawBody: request.body.replace("channel_", "channel-") });
  assert.equal(tampered.isValid(), false);
  const other = new PusherServer({ appId: "1", key: KEY, secret: "another-secret", useTLS: false });
  assert.equal(other.webhook({ headers: request.headers, rawBody: request.body }).isValid(), false);
});
