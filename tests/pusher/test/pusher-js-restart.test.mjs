// pusher-js 8, unchanged, through a restart of cometbox: the page is told
// to reconnect (close 4200) when the server stops, comes back on its own
// once the server answers again on the same port, with a new socket id,
// subscribes again and gets the official SDK's next trigger. This test
// starts its own server (the binary run-tests.sh names), on loopback ports
// picked free, and stops it by its pid.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import Pusher from "pusher-js";
import PusherServer from "pusher";
import { env } from "./lib.mjs";

const KEY = "restart-key";
const SECRET = "restart-secret";
const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/** A loopback port free right now (bound and released). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts the server on `ports`; resolves once /health answers. */
async function start(ports) {
  const child = spawn(env("PUSHER_SUITE_BIN"), [], {
    env: {
      PATH: process.env.PATH,
      COMETBOX_PUBLIC__LISTEN: `127.0.0.1:${ports.public}`,
      COMETBOX_INGEST__LISTEN: `127.0.0.1:${ports.ingest}`,
      COMETBOX_PUSHER__ENABLED: "true",
      COMETBOX_PUSHER__APP_ID: "1",
      COMETBOX_PUSHER__KEY: KEY,
      COMETBOX_PUSHER__SECRET: SECRET,
      COMETBOX_AUTH__SECRET: "restart-test-token-secret-0123456789",
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr.on("data", (chunk) => (log += chunk));
  const exited = new Promise((resolve) => child.once("exit", resolve));
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`the server exited: ${log}`);
    try {
      const res = await fetch(`http://127.0.0.1:${ports.public}/health`);
      if (res.status === 200) return { child, exited, log: () => log };
    } catch {
      // not listening yet
    }
    await delay(100);
  }
  child.kill("SIGKILL");
  throw new Error(`the server did not answer /health within 30 s: ${log}`);
}

/** Stops the server by its pid (SIGTERM, then SIGKILL after 10 s). */
async function stop(server) {
  server.child.kill("SIGTERM");
  const timer = setTimeout(() => server.child.kill("SIGKILL"), 10000);
  await server.exited;
  clearTimeout(timer);
}

/** Resolves once `pusher` is connected with a socket id other than `not`. */
function connectedAgain(pusher, not) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`not connected again within 45 s (state ${pusher.connection.state})`)),
      45000,
    );
    const check = () => {
      const id = pusher.connection.socket_id;
      if (pusher.connection.state === "connected" && id && id !== not) {
        clearTimeout(timer);
        resolve(id);
      }
    };
    pusher.connection.bind("state_change", check);
    check();
  });
}

test("pusher-js: reconnects after a server restart, subscribes again and hears the next trigger", { timeout: 120000 }, async () => {
  const ports = { public: await freePort(), ingest: await freePort() };
  let server = await start(ports);
  const pusher = new Pusher(KEY, {
    cluster: "mt1",
    wsHost: "127.0.0.1",
    wsPort: ports.public,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
  });
  const sdk = new PusherServer({
    appId: "1", key: KEY, secret: SECRET, host: "127.0.0.1", port: String(ports.ingest), useTLS: false,
  });
  const states = [];
  pusher.connection.bind("state_change", ({ current }) => states.push(current));
  try {
    const first = await connectedAgain(pusher, null);
    const channel = pusher.subscribe("restart-news");
    let subscribed = 0;
    channel.bind("pusher:subscription_succeeded", () => subscribed++);
    const heard = [];
    channel.bind("flash", (data) => heard.push(data));
    while (subscribed < 1) await delay(20);
    await sdk.trigger("restart-news", "flash", { n: 1 });
    while (heard.length < 1) await delay(20);

    await stop(server);
    await delay(500);
    server = await start(ports);
    const second = await connectedAgain(pusher, first);
    assert.notEqual(second, first, "a new socket");
    assert.ok(states.includes("connecting") || states.includes("unavailable"), `states: ${states}`);
    for (let i = 0; subscribed < 2; i++) {
      if (i > 500) throw new Error("not subscribed again within 10 s");
      await delay(20);
    }
    await sdk.trigger("restart-news", "flash", { n: 2 });
    for (let i = 0; heard.length < 2; i++) {
      if (i > 500) throw new Error(`the trigger after the restart did not arrive: ${JSON.stringify(heard)}`);
      await delay(20);
    }
    assert.deepEqual(heard, [{ n: 1 }, { n: 2 }]);
  } finally {
    pusher.disconnect();
    await stop(server);
  }
});
