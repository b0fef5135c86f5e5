// Type declarations for cometbox.js (browser client of the cometbox server-push relay),
// the CommonJS / script form: `require('cometbox-client')` is the class itself
// (`module.exports = CometBox`), with the types below on its namespace
// (`CometBox.CometBoxOptions`). `import` uses cometbox.d.mts, which re-exports these.

declare class CometBox {
  constructor(url: string, options?: CometBox.CometBoxOptions);

  /** The cursor of the last message handled (sent as `since` by the next poll). */
  readonly cursor: string | null;
  readonly state: CometBox.CometBoxState;
  readonly token: string | null;
  /** The token's `sub` claim. */
  readonly clientId: string | null;
  /** `<url>/poll`. */
  readonly pollUrl: string;
  /** `<url>/events`. */
  readonly eventsUrl: string;
  /** `<url>/ws` as a `ws:`/`wss:` URL. */
  readonly wsUrl: string;
  /** The transport in use (null before the first `start()`). */
  readonly transport: 'ws' | 'sse' | 'poll' | null;
  /**
   * Why `transport: 'auto'` left the WebSocket or the stream (the last step it took):
   * `ws-failed` / `ws-timeout` (the socket did not open, and the stream or a poll got
   * an HTTP answer instead), `ws-buffered` (opened, no answer in time), `ws-stalled`
   * (a live socket went silent twice); then, for long-poll, `no-streams` (old browser),
   * `http-404` / `http-405` / `http-501` (no /events), `not-a-stream`, `stream-closed`,
   * `buffered` (no first bytes in time), `stream-unreachable` (/poll answered where
   * /events never did), `stream-stalled` (a live stream went silent twice); null otherwise.
   */
  readonly fallbackReason: string | null;
  /** `leader` (holds the connection), `follower` (another tab does), `solo` (not shared), null (stopped or deciding). */
  readonly role: 'leader' | 'follower' | 'solo' | null;

  /** Handle messages whose `event` is `eventName` (`'*'`: all messages). */
  on<T = any>(eventName: string, handler: (data: T, message: CometBox.CometBoxMessage<T>) => void): this;
  off(eventName: string, handler?: (data: any, message: CometBox.CometBoxMessage) => void): this;
  /** Replace the token; used from the next poll. */
  setToken(token: string): this;
  start(): this;
  stop(): this;

  /** The class itself, also under these names (`require('cometbox-client').CometBox`). */
  static readonly CometBox: typeof CometBox;
  static readonly default: typeof CometBox;
}

declare namespace CometBox {
  /** One message of a poll reply (docs/protocol.md, `GET /poll`). */
  interface CometBoxMessage<T = unknown> {
    /** The cursor just after this message. Opaque. */
    id: string;
    /** Present when the message was sent to a channel. */
    channel?: string;
    /** Present when the backend set `event="..."`. */
    event?: string;
    /** The payload: the JSON value the backend sent (a string for `type="text"`). */
    data: T;
    /** Server time of arrival, milliseconds since the Unix epoch. */
    ts?: number;
  }

  type CometBoxState = 'connecting' | 'connected' | 'waiting to reconnect' | 'stopped';

  /** Error given to `onError` (always fatal there) and to `onStateChange` details. */
  class CometBoxError extends Error {
    /**
     * The server's error code (`invalid-request`, `invalid-token`, `token-expired`,
     * `channel-forbidden`, `too-many-polls`, `shutting-down`, `overloaded`) or a
     * client code: `disconnected` (the backend disconnected this client), `network`,
     * `request-timeout`, `bad-response`, `client-error`, `token-refresh-failed`, `http-<status>`.
     */
    code: string;
    /** HTTP status, 0 when no HTTP answer was received. A WebSocket close code is given the
     *  status of its HTTP twin: 4001 → 401, 4003 → 403 (`invalid-token`: 401), 4029 → 429,
     *  1008 → 400, 1001 / 1013 → 503. */
    status: number;
    /** true when the instance stopped because of this error. */
    fatal: boolean;
    constructor(code: string, message?: string, status?: number, fatal?: boolean);
  }

  interface StateChangeDetail {
    /** The state before this change. */
    previous: CometBoxState;
    /** Why (for `waiting to reconnect`, and `stopped` after a fatal error). */
    error?: CometBoxError;
    /** For `waiting to reconnect`: milliseconds until the next attempt. */
    delay?: number;
    /** For `waiting to reconnect`: consecutive failures so far (1, 2, ...). */
    attempt?: number;
  }

  interface ResetInfo<T = unknown> {
    /** The new cursor the client continues from. */
    cursor: string;
    /** The messages of the reset reply (dispatched right after onReset returns);
     *  empty on the SSE stream, whose messages follow as their own events. */
    messages: CometBoxMessage<T>[];
    /** The cursor the server could not honour. */
    previousCursor: string | null;
  }

  interface GetTokenContext {
    /** `invalid-token`, `token-expired` (after a 401), or `no-token` (none was given). */
    reason: string;
    /** The `sub` of the previous token, if any. */
    clientId: string | null;
  }

  interface CometBoxOptions {
    /** The JWT (`sub` = client id). Optional when `getToken` is given. */
    token?: string;
    /** Called for a fresh token on 401 (`invalid-token`, `token-expired`) or when no token was given. */
    getToken?: (ctx: GetTokenContext) => string | Promise<string>;
    /** Channels to subscribe to on every poll (each must be allowed by the token's `channels` claim). */
    channels?: string[] | string;
    /** Cursor to start from (wins over the one remembered in sessionStorage). */
    since?: string;
    /** Every message, before the `on()` handlers. */
    onMessage?: (message: CometBoxMessage) => void;
    /** A fatal error: the instance is `stopped` (400, 403, 401 without getToken, `disconnected`...). */
    onError?: (error: CometBoxError) => void;
    /** A poll ended with no message (the server's poll timeout passed). Long-poll only,
     *  and only in the tab that holds the connection. */
    onTimeout?: (info: { cursor: string }) => void;
    /** The server could not honour the cursor (restart, expiry): resync the page's state. */
    onReset?: (info: ResetInfo) => void;
    /** Every state change. */
    onStateChange?: (state: CometBoxState, detail: StateChangeDetail) => void;

    /** Seconds the server may hold an empty poll (`?timeout=`); default: the server's. */
    timeout?: number;
    /** Client-side limit on one poll request in ms (default: timeout + 30 s, or 90 s). */
    requestTimeout?: number;
    /** Send the token as `Authorization: Bearer` (default; CORS preflight) or as `?token=`. */
    tokenIn?: 'header' | 'query';
    /** Reconnect backoff in ms (default base 1000, max 30000). */
    backoff?: { base?: number; max?: number };

    /**
     * `'auto'` (default): a WebSocket `GET <url>/ws` where it works, else the SSE
     * stream `GET <url>/events`, else long-poll (detected, then kept for this
     * instance; see `fallbackReason`). `'ws'`: the WebSocket only (the token goes in
     * its query). `'sse'`: the stream only. `'poll'`: long-poll only.
     */
    transport?: 'auto' | 'ws' | 'sse' | 'poll';
    /** ms a WebSocket may take to open and answer, or the stream's first bytes (`: ok`) to come,
     *  before `'auto'` decides it does not get through here (default 5000). */
    streamProbeTimeout?: number;
    /** ms of silence (no event, no keep-alive; on a WebSocket, no answer to the class's
     *  ping sent after half of it) after which a stream or socket is taken for dead (default 45000). */
    streamIdleTimeout?: number;
    /**
     * `true` (default): all tabs of this browser that use the same url, client
     * (token `sub`) and channels share one connection (Web Locks election,
     * BroadcastChannel to the other tabs). `false`: this instance connects by itself.
     */
    shareTabs?: boolean;
    /** Injected for tests: the Web Locks manager (default `navigator.locks`; null: no sharing). */
    locks?: { request(name: string, ...args: any[]): Promise<any> } | null;
    /** Injected for tests: the BroadcastChannel constructor (default the global; null: no sharing). */
    BroadcastChannel?: typeof BroadcastChannel | null;
    /** Injected for tests or unusual runtimes: the WebSocket constructor (default the global;
     *  null: none, so `'auto'` starts with the stream). */
    WebSocket?: { new (url: string): WebSocket } | null;

    /** Where the cursor is remembered (default: sessionStorage; null disables). */
    storage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> | null;
    /** Injected for tests or unusual runtimes. */
    fetch?: typeof fetch;
    timers?: { setTimeout: (fn: () => void, ms: number) => unknown; clearTimeout: (id: any) => void };
    random?: () => number;
    /** Milliseconds clock (default Date.now). */
    now?: () => number;
    AbortController?: typeof AbortController;
    /** Where the `online` event is listened for (default: window; null disables). */
    eventTarget?: Pick<EventTarget, 'addEventListener' | 'removeEventListener'> | null;
  }

  const VERSION: string;
  const STATES: {
    readonly CONNECTING: 'connecting';
    readonly CONNECTED: 'connected';
    readonly WAITING: 'waiting to reconnect';
    readonly STOPPED: 'stopped';
  };
  /** The claims of a JWT (payload base64url-decoded, signature not checked), or null. */
  function decodeToken(token: string): Record<string, unknown> | null;
  /** The reconnect delay in ms for attempt n (1, 2, ...): capped exponential with jitter. */
  function backoffDelay(attempt: number, backoff?: { base?: number; max?: number }, random?: () => number): number;
}

export = CometBox;

declare global {
  /** Set by `<script src="/cometbox.js">`. */
  var CometBox: typeof import('./cometbox.js');
}
