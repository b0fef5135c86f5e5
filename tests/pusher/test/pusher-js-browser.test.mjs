// pusher-js 8 and Laravel Echo 2 (their browser builds, unchanged) in headless Debian Chromium
// against cometbox's GET /app/<key>, the way a site uses it: the page is
// served by the site (a small Node server on loopback), which also answers
// pusher-js's channel authorisation at /auth with the official `pusher`
// server SDK, as Laravel's /broadcasting/auth does. Events come from the
// SDK's trigger; whispers from another page.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import PusherServer from "pusher";
import { chromium } from "playwright-core";
import { env } from "./lib.mjs";

const require = createRequire(import.meta.url);
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const publicUrl = new URL(env("PUSHER_SUITE_PUBLIC"));
const ingestUrl = new URL(env("PUSHER_SUITE_INGEST"));
const KEY = env("PUSHER_SUITE_KEY");
const SECRET = env("PUSHER_SUITE_SECRET");
const PUSHER_JS = fs.readFileSync(require.resolve("pusher-js/dist/web/pusher.min.js"));
// (laravel-echo's package exports do not list its browser build: read by path.)
const ECHO_JS = fs.readFileSync(new URL("../node_modules/laravel-echo/dist/echo.iife.js", import.meta.url));

const sdk = new PusherServer({
  appId: env("PUSHER_SUITE_APP_ID"),
  key: KEY,
  secret: SECRET,
  host: ingestUrl.hostname,
  port: ingestUrl.port,
  useTLS: false,
});
const forger = new PusherServer({ appId: "1", key: KEY, secret: "not-the-secret", useTLS: false });

/** The site's page: pusher-js pointed at cometbox, auth at the site's /auth. */
function page(auth) {
  return `<!doctype html><html><head><meta charset="utf-8">
<script src="/pusher.min.js"></script></head><body><script>
  window.T = { events: [], errors: [] };
  const user = new URLSearchParams(location.search).get("user") || "";
  window.pusher = new Pusher(${JSON.stringify(KEY)}, {
    cluster: "mt1",
    wsHost: ${JSON.stringify(publicUrl.hostname)},
    wsPort: ${Number(publicUrl.port)},
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: { endpoint: "${auth}?user=" + encodeURIComponent(user), transport: "ajax" },
  });
  window.track = (channel, names) => {
    const c = pusher.subscribe(channel);
    for (const name of names) c.bind(name, (data) => T.events.push({ channel, name, data }));
    c.bind("pusher:subscription_error", (e) => T.errors.push({ channel, status: e.status }));
    return c;
  };
</script></body></html>`;
}

/** A Laravel page: Echo's browser build over pusher-js, as resources/js/echo.js sets it up. */
function echoPage() {
  return `<!doctype html><html><head><meta charset="utf-8">
<script src="/pusher.min.js"></script><script src="/echo.iife.js"></script></head><body><script>
  window.T = { events: [], here: null, joining: [], whispers: [] };
  const user = new URLSearchParams(location.search).get("user") || "";
  window.echo = new Echo.default({
    broadcaster: "pusher",
    key: ${JSON.stringify(KEY)},
    cluster: "mt1",
    wsHost: ${JSON.stringify(publicUrl.hostname)},
    wsPort: ${Number(publicUrl.port)},
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    authEndpoint: "/auth?user=" + encodeURIComponent(user),
  });
</script></body></html>`;
}

/** The site: the page, pusher-js's browser build, and /auth. */
function site() {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      const url = new URL(req.url, "http://site");
      if (url.pathname === "/pusher.min.js" || url.pathname === "/echo.iife.js") {
        res.writeHead(200, { "content-type": "text/javascript" });
        return res.end(url.pathname === "/pusher.min.js" ? PUSHER_JS : ECHO_JS);
      }
      if (url.pathname === "/echo") {
        res.writeHead(200, { "content-type": "text/html" });
        return res.end(echoPage());
      }
      if (url.pathname === "/" || url.pathname === "/forged") {
        res.writeHead(200, { "content-type": "text/html" });
        return res.end(page(url.pathname === "/forged" ? "/auth-forged" : "/auth"));
      }
      if (req.method === "POST" && url.pathname.startsWith("/auth")) {
        let body = "";
        req.on("data", (c) => (body += c));
        req.on("end", () => {
          const form = new URLSearchParams(body);
          const channel = form.get("channel_name");
          const user = url.searchParams.get("user");
          const presence = channel.startsWith("presence-")
            ? { user_id: user, user_info: { name: user.toUpperCase() } }
            : undefined;
          const signer = url.pathname === "/auth-forged" ? forger : sdk;
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify(signer.authorizeChannel(form.get("socket_id"), channel, presence)));
        });
        return;
      }
      res.writeHead(404);
      res.end();
    });
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

let browser;
let siteServer;
let origin;

before(async () => {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install -y chromium)`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
    timeout: 30000,
  });
  siteServer = await site();
  origin = `http://127.0.0.1:${siteServer.address().port}`;
});

after(async () => {
  if (browser) await browser.close();
  if (siteServer) siteServer.close();
});

async function open(path) {
  const ctx = await browser.newContext();
  const tab = await ctx.newPage();
  await tab.goto(`${origin}${path}`);
  await tab.waitForFunction(() => pusher.connection.state === "connected", null, { timeout: 10000 });
  return { tab, ctx };
}

const events = (tab) => tab.evaluate(() => T.events);
const until = (tab, fn, arg) => tab.waitForFunction(fn, arg, { timeout: 10000, polling: 50 });

test("Chromium: a private channel authorised by the site gets the SDK's trigger; a forged signature is refused", async () => {
  const good = await open("/?user=ann");
  const forged = await open("/forged?user=eve");
  try {
    await good.tab.evaluate(() => track("private-orders", ["shipped"]));
    await forged.tab.evaluate(() => track("private-orders", ["shipped"]));
    await until(good.tab, () => pusher.channel("private-orders").subscribed);
    await until(forged.tab, () => T.errors.length === 1);
    assert.deepEqual(await forged.tab.evaluate(() => T.errors), [{ channel: "private-orders", status: 401 }]);

    await sdk.trigger("private-orders", "shipped", { id: 9 });
    await until(good.tab, () => T.events.length === 1);
    assert.deepEqual(await events(good.tab), [{ channel: "private-orders", name: "shipped", data: { id: 9 } }]);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await events(forged.tab), []);
  } finally {
    await good.ctx.close();
    await forged.ctx.close();
  }
});

test("Chromium: two pages in a presence channel see each other, and a whisper goes across", async () => {
  const ann = await open("/?user=ann");
  const bob = await open("/?user=bob");
  try {
    await ann.tab.evaluate(() => {
      const c = track("presence-room", ["client-typing"]);
      c.bind("pusher:member_added", (m) => T.events.push({ name: "added", data: { id: m.id, info: m.info } }));
      c.bind("pusher:member_removed", (m) => T.events.push({ name: "removed", data: { id: m.id } }));
    });
    await until(ann.tab, () => pusher.channel("presence-room").subscribed);
    await bob.tab.evaluate(() => track("presence-room", []));
    await until(bob.tab, () => pusher.channel("presence-room").subscribed);
    assert.equal(await bob.tab.evaluate(() => pusher.channel("presence-room").members.count), 2);
    assert.deepEqual(
      await bob.tab.evaluate(() => pusher.channel("presence-room").members.get("ann").info),
      { name: "ANN" },
    );
    await until(ann.tab, () => T.events.some((e) => e.name === "added"));

    await bob.tab.evaluate(() => pusher.channel("presence-room").trigger("client-typing", { who: "bob" }));
    await until(ann.tab, () => T.events.some((e) => e.name === "client-typing"));
    const typing = (await events(ann.tab)).find((e) => e.name === "client-typing");
    assert.deepEqual(typing.data, { who: "bob" });

    await bob.ctx.close();
    await until(ann.tab, () => T.events.some((e) => e.name === "removed"));
    assert.deepEqual((await events(ann.tab)).find((e) => e.name === "added").data, { id: "bob", info: { name: "BOB" } });
  } finally {
    await ann.ctx.close();
    await bob.ctx.close().catch(() => {});
  }
});

test("Chromium: Laravel Echo listens on a private channel, joins a presence channel, whispers", async () => {
  const openEcho = async (user) => {
    const ctx = await browser.newContext();
    const tab = await ctx.newPage();
    await tab.goto(`${origin}/echo?user=${user}`);
    await tab.waitForFunction(() => echo.connector.pusher.connection.state === "connected", null, { timeout: 10000 });
    return { tab, ctx };
  };
  const taylor = await openEcho("taylor");
  const jess = await openEcho("jess");
  try {
    await taylor.tab.evaluate(() => {
      echo.private("orders.1").listen("OrderShipped", (e) => T.events.push(e));
      echo.join("chat")
        .here((users) => { T.here = users; })
        .joining((user) => T.joining.push(user))
        .listenForWhisper("typing", (e) => T.whispers.push(e));
    });
    await until(taylor.tab, () => T.here !== null && echo.connector.pusher.channel("private-orders.1").subscribed);
    await jess.tab.evaluate(() => { echo.join("chat").here((users) => { T.here = users; }); });
    await until(jess.tab, () => T.here !== null);
    assert.deepEqual((await jess.tab.evaluate(() => T.here.map((u) => u.name))).sort(), ["JESS", "TAYLOR"]);
    await until(taylor.tab, () => T.joining.length === 1);
    assert.equal(await taylor.tab.evaluate(() => T.joining[0].name), "JESS");

    // What Laravel's broadcaster sends for an OrderShipped event on private-orders.1.
    await sdk.trigger("private-orders.1", "App\\Events\\OrderShipped", { order: { id: 1 } });
    await until(taylor.tab, () => T.events.length === 1);
    assert.deepEqual(await taylor.tab.evaluate(() => T.events[0]), { order: { id: 1 } });

    await jess.tab.evaluate(() => echo.join("chat").whisper("typing", { name: "Jess" }));
    await until(taylor.tab, () => T.whispers.length === 1);
    assert.deepEqual(await taylor.tab.evaluate(() => T.whispers[0]), { name: "Jess" });
  } finally {
    await taylor.ctx.close();
    await jess.ctx.close();
  }
});
