// pusher-js 8, unchanged, through a restart of cometbox: the page is told
// to reconnect (close 4200) when the server stops, comes back on its own
// once the server answers again on the same port, with a new socket id,
// subscribes again and gets the official SDK's next trigger. This test
// starts its own server (the binary run-tests.sh names) with the shared
// JavaScript test support (tests/support/server.cjs): on loopback port 0,
// the bound ports read back from its ready file, restarted on the same
// ports, stopped by its pid.

import { test } from "node:test";
import assert from "node:assert/strict";
import Pusher from "pusher-js";
import PusherServer from "pusher";
import support from "../../support/server.cjs";
import { env } from "./lib.mjs";

const { Server, waitFor, sleep: delay } = support;
const KEY = "restart-key";
const SECRET = "restart-secret";

/** The server with [pusher] on; not started. */
function pusherServer() {
  return new Server(
    {
      COMETBOX_PUSHER__ENABLED: "true",
      COMETBOX_PUSHER__APP_ID: "1",
      COMETBOX_PUSHER__KEY: KEY,
      COMETBOX_PUSHER__SECRET: SECRET,
      COMETBOX_AUTH__SECRET: "restart-test-token-secret-0123456789",
    },
    { bin: env("PUSHER_SUITE_BIN") },
  );
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
  const server = await pusherServer().start();
  const ports = { public: server.publicPort, ingest: server.ingestPort };
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
    await waitFor(() => subscribed >= 1, { what: "the subscription" });
    await sdk.trigger("restart-news", "flash", { n: 1 });
    await waitFor(() => heard.length >= 1, { what: "the first trigger" });

    await server.stop();
    await delay(500);
    await server.restart(); // on the same ports, which the page keeps trying
    assert.deepEqual({ public: server.publicPort, ingest: server.ingestPort }, ports);
    const second = await connectedAgain(pusher, first);
    assert.notEqual(second, first, "a new socket");
    assert.ok(states.includes("connecting") || states.includes("unavailable"), `states: ${states}`);
    await waitFor(() => subscribed >= 2, { what: "the subscription again" });
    await sdk.trigger("restart-news", "flash", { n: 2 });
    await waitFor(() => heard.length >= 2, { what: "the trigger after the restart" })
      .catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(heard)}`); });
    assert.deepEqual(heard, [{ n: 1 }, { n: 2 }]);
  } finally {
    pusher.disconnect();
    await server.stop();
    server.cleanup();
  }
});
