// What the Node tests share: the server's addresses from run-tests.sh, and
// a browser's side through real GET /poll requests (tokens minted by the
// server's own POST /token on the ingest listener). Waits are the shared
// JavaScript test support's (tests/support/server.cjs).

import support from "../../support/server.cjs";

const { waitFor } = support;

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run tests/pusher/run-tests.sh`);
  return value;
}

const ingest = () => env("PUSHER_SUITE_INGEST");
const publicUrl = () => env("PUSHER_SUITE_PUBLIC");

/** A browser token for `client`, granted `channels`. */
export async function token(client, channels) {
  const query = new URLSearchParams({ client });
  for (const c of channels) query.append("channel", c);
  const res = await fetch(`${ingest()}/token?${query}`, {
    method: "POST",
    headers: { accept: "text/plain" },
  });
  if (res.status !== 200) throw new Error(`POST /token: ${res.status} ${await res.text()}`);
  return (await res.text()).trim();
}

async function presence(client) {
  const res = await fetch(`${ingest()}/clients/${client}`);
  return res.status === 200 ? res.json() : null;
}

/** Waits (at most 5 s) until `client` holds an open poll. */
async function untilOpen(client) {
  await waitFor(async () => {
    const p = await presence(client);
    return p && p.open_polls > 0;
  }, { timeout: 5000, interval: 20, what: `${client} holding an open poll` });
}

/**
 * Opens GET /poll for `client` subscribing to `channels`, waits until the
 * server holds it, and returns `{ reply }`, the promise of its JSON reply
 * (wrapped: an async function returning the promise itself would wait
 * for it).
 */
export async function openPoll(client, channels, timeout = 10) {
  const t = await token(client, channels);
  const query = new URLSearchParams({ token: t, channels: channels.join(","), timeout: String(timeout) });
  const reply = fetch(`${publicUrl()}/poll?${query}`).then(async (res) => {
    const body = await res.text();
    if (res.status !== 200) throw new Error(`GET /poll: ${res.status} ${body}`);
    return JSON.parse(body);
  });
  reply.catch(() => {});
  await untilOpen(client);
  return { reply };
}

/** A subscription made by a real poll, which then ends at once. */
export async function subscribeByPoll(client, channels) {
  const t = await token(client, channels);
  const query = new URLSearchParams({ token: t, channels: channels.join(","), timeout: "0" });
  const res = await fetch(`${publicUrl()}/poll?${query}`);
  if (res.status !== 200) throw new Error(`GET /poll: ${res.status} ${await res.text()}`);
  await res.text();
}

/** What `client` has waiting, by a poll that does not wait. */
export async function pollNow(client) {
  const t = await token(client, []);
  const res = await fetch(`${publicUrl()}/poll?token=${encodeURIComponent(t)}&timeout=0`);
  const body = await res.text();
  if (res.status !== 200) throw new Error(`GET /poll: ${res.status} ${body}`);
  return JSON.parse(body);
}
