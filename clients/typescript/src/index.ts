/**
 * tidings-client: the Tidings event bus from browsers and Node 20+.
 *
 * No runtime dependencies. In Node without a global `WebSocket` (Node 20),
 * the optional peer `ws` is imported dynamically the first time a WebSocket
 * is needed; browsers never load it.
 *
 * Delivery contract: a subscription hands its handler every matching event
 * once, in seq order. After a disconnect it reconnects by itself (capped
 * exponential backoff with jitter) and resumes right after the last seq it
 * delivered; anything at or below that seq is dropped, so a resume never
 * duplicates.
 */

/** An event as the server sends it. */
export interface TidingsEvent<N extends string = string, D = unknown> {
  seq: number;
  id: string;
  name: N;
  source: string;
  time: string;
  data: D;
  key?: string;
  priority?: string;
  /** Set on a publish answer when the idempotency key was seen before. */
  duplicate?: boolean;
}

/** Event names mapped to their `data` types, e.g. `{ "order.placed": { id: string } }`. */
export type EventMap = Record<string, unknown>;

/** The union of typed events described by `M`. */
export type EventOf<M extends EventMap> = {
  [K in keyof M & string]: TidingsEvent<K, M[K]>;
}[keyof M & string];

/** A server refusal: the HTTP status and the server's JSON error. */
export class TidingsError extends Error {
  readonly status: number;
  readonly code: string;
  /** Seconds, from `Retry-After`, when trying later can help. */
  readonly retryAfter?: number;

  constructor(status: number, code: string, message: string, retryAfter?: number) {
    super(message);
    this.name = "TidingsError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** True for refusals that a later attempt may not get (not 408, 429, 5xx). */
  get permanent(): boolean {
    return this.status >= 400 && this.status < 500 && this.status !== 408 && this.status !== 429;
  }
}

/** A token, or a function that returns a fresh one (called at every connect). */
export type TokenSource = string | (() => string | Promise<string>);

export interface ClientOptions {
  token?: TokenSource;
  /** Reconnect backoff: first delay, in ms (default 250). */
  minBackoffMs?: number;
  /** Reconnect backoff cap, in ms (default 10000). */
  maxBackoffMs?: number;
  /** A connection that receives nothing (not even a keepalive) this long is reopened (default 45000). */
  idleTimeoutMs?: number;
}

export interface PublishOptions {
  key?: string;
  source?: string;
  /** ISO time the fact happened (default: now, by the server). */
  time?: string;
  /** Refuse (409) unless the log's last seq is this. */
  expectLast?: number;
  signal?: AbortSignal;
}

export interface NewEvent<N extends string = string, D = unknown> {
  name: N;
  data?: D;
  key?: string;
  source?: string;
  time?: string;
}

export interface HistoryOptions {
  after?: number;
  /** Events per page (the server caps it). */
  limit?: number;
  filter?: string;
  signal?: AbortSignal;
}

export interface HistoryPage<E> {
  events: E[];
  /** Pass as `after` to continue. */
  next_after: number;
  /** The log's last seq when the page was read. */
  last_seq: number;
}

export interface Lag {
  missed: number;
  resumeFrom: number;
}

export type Transport = "ws" | "sse";

export interface SubscribeOptions {
  /** Deliver events after this seq (default: from the moment of subscribing). */
  after?: number;
  /** A CEL expression over the envelope, e.g. `data.world_id == 42`. */
  filter?: string;
  transport?: Transport;
  /** The log pruned events before they could be delivered. */
  onLag?: (lag: Lag) => void;
  /** A handler threw, or a connection failed (the subscription goes on unless `fatal`). */
  onError?: (error: unknown, fatal: boolean) => void;
  /** Connection state changes (for UIs). */
  onState?: (state: ConnectionState) => void;
  signal?: AbortSignal;
}

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

export interface ConsumerOptions {
  /** Seeds a new consumer's position (default: from the beginning). */
  after?: number;
  filter?: string;
  onLag?: (lag: Lag) => void;
  onError?: (error: unknown, fatal: boolean) => void;
  onState?: (state: ConnectionState) => void;
  signal?: AbortSignal;
}

export type Handler<E> = (event: E) => void | Promise<void>;

/** A live subscription. */
export interface Subscription {
  /** Resolves when the first connection is open; rejects if it is refused for good. */
  readonly ready: Promise<void>;
  /** Resolves when the subscription has stopped (after `unsubscribe`, or a permanent refusal). */
  readonly closed: Promise<void>;
  /** The last seq handed to the handler (or the starting point). */
  readonly lastSeq: number | undefined;
  readonly patterns: readonly string[];
  readonly state: ConnectionState;
  unsubscribe(): void;
  addPattern(pattern: string): Promise<void>;
  removePattern(pattern: string): Promise<void>;
}

// ---------------------------------------------------------------------------

interface SocketLike {
  readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
type SocketCtor = new (url: string) => SocketLike;

/** Consumer acknowledgements are sent at most this often (they are cumulative). */
const ACK_INTERVAL_MS = 100;

let socketCtor: Promise<SocketCtor> | undefined;
function webSocketCtor(): Promise<SocketCtor> {
  if (!socketCtor) {
    const g = globalThis as { WebSocket?: SocketCtor };
    if (g.WebSocket) {
      socketCtor = Promise.resolve(g.WebSocket);
    } else {
      // Node 20: the optional peer `ws`. The name is a variable so bundlers
      // for browsers leave it alone.
      const name = "ws";
      socketCtor = import(/* @vite-ignore */ name).then(
        (m: { WebSocket?: SocketCtor; default?: SocketCtor }) => {
          const ctor = m.WebSocket ?? m.default;
          if (!ctor) throw new Error("the `ws` package did not export WebSocket");
          return ctor;
        },
        () => {
          throw new Error("no global WebSocket: install the `ws` package (npm i ws) on Node < 22");
        },
      );
    }
  }
  return socketCtor;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

async function errorFrom(res: Response): Promise<TidingsError> {
  const text = await res.text().catch(() => "");
  const retry = res.headers.get("retry-after");
  const retryAfter = retry !== null && /^\d+$/.test(retry) ? Number(retry) : undefined;
  try {
    const body = JSON.parse(text) as { error?: string; code?: string; status?: number };
    if (body && typeof body.error === "string") {
      return new TidingsError(res.status, body.code ?? "error", body.error, retryAfter);
    }
  } catch {
    // not JSON: fall through
  }
  return new TidingsError(res.status, "http_error", text.trim() || res.statusText || `HTTP ${res.status}`, retryAfter);
}

/** A client of one Tidings server. */
export class TidingsClient {
  readonly baseUrl: string;
  private readonly options: ClientOptions;

  constructor(baseUrl: string, options: ClientOptions = {}) {
    const base = new URL(baseUrl, (globalThis as { location?: { href: string } }).location?.href);
    this.baseUrl = base.href.replace(/\/+$/, "");
    this.options = options;
  }

  /** The current token, if any. */
  async token(): Promise<string | undefined> {
    const t = this.options.token;
    return typeof t === "function" ? await t() : t;
  }

  /** `baseUrl + path` with `params` (arrays repeat the key; undefined is left out). */
  url(path: string, params: Record<string, string | number | readonly string[] | undefined> = {}): URL {
    const url = new URL(this.baseUrl + path);
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined) continue;
      if (Array.isArray(v)) for (const item of v) url.searchParams.append(k, String(item));
      else url.searchParams.set(k, String(v));
    }
    return url;
  }

  /** A request to the server; a non-2xx answer is thrown as a {@link TidingsError}. */
  async request<T = unknown>(method: string, path: string, init: {
    params?: Record<string, string | number | readonly string[] | undefined>;
    body?: unknown;
    signal?: AbortSignal;
  } = {}): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json" };
    const token = await this.token();
    if (token) headers.authorization = `Bearer ${token}`;
    let body: string | undefined;
    if (init.body !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(init.body);
    }
    const res = await fetch(this.url(path, init.params), { method, headers, body, signal: init.signal });
    if (!res.ok) throw await errorFrom(res);
    const text = await res.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** Publishes one event; answers with the committed envelope. */
  publish<N extends string, D>(name: N, data?: D, options: PublishOptions = {}): Promise<TidingsEvent<N, D>> {
    const body: NewEvent = { name, data: data ?? null };
    if (options.key !== undefined) body.key = options.key;
    if (options.source !== undefined) body.source = options.source;
    if (options.time !== undefined) body.time = options.time;
    return this.request("POST", "/events", {
      body,
      params: { expect_last: options.expectLast },
      signal: options.signal,
    });
  }

  /** Publishes events atomically: all are committed, or none. */
  publishBatch(events: readonly NewEvent[], options: { expectLast?: number; signal?: AbortSignal } = {}): Promise<TidingsEvent[]> {
    return this.request("POST", "/events", {
      body: events.map((e) => ({ ...e, data: e.data ?? null })),
      params: { expect_last: options.expectLast },
      signal: options.signal,
    });
  }

  /** One page of history. */
  historyPage<M extends EventMap = EventMap>(pattern: string, options: HistoryOptions = {}): Promise<HistoryPage<EventOf<M>>> {
    return this.request("GET", "/events", {
      params: { pattern, after: options.after ?? 0, limit: options.limit, filter: options.filter },
      signal: options.signal,
    });
  }

  /**
   * History as pages, oldest first, up to the log's end when the iteration
   * started: `for await (const page of client.history("orders.>")) …`.
   */
  async *history<M extends EventMap = EventMap>(pattern: string, options: HistoryOptions = {}): AsyncGenerator<HistoryPage<EventOf<M>>> {
    let after = options.after ?? 0;
    let end: number | undefined;
    for (;;) {
      const page = await this.historyPage<M>(pattern, { ...options, after });
      end ??= page.last_seq;
      if (page.events.length > 0) yield page;
      if (page.next_after <= after || page.next_after >= end) return;
      after = page.next_after;
    }
  }

  /** History event by event (see {@link history}). */
  async *historyEvents<M extends EventMap = EventMap>(pattern: string, options: HistoryOptions = {}): AsyncGenerator<EventOf<M>> {
    for await (const page of this.history<M>(pattern, options)) yield* page.events;
  }

  /** The log's last seq (from `/healthz`, which answers even while degraded). */
  async lastSeq(signal?: AbortSignal): Promise<number> {
    const res = await fetch(this.url("/healthz"), { signal });
    const body = (await res.json()) as { last_seq?: number };
    if (typeof body.last_seq !== "number") throw await errorFrom(res);
    return body.last_seq;
  }

  /**
   * Subscribes `handler` to events matching any of `patterns`. Handlers run
   * one at a time, in seq order; a returned promise is awaited before the
   * next event.
   */
  subscribe<M extends EventMap = EventMap>(
    patterns: string | readonly string[],
    handler: Handler<EventOf<M>>,
    options: SubscribeOptions = {},
  ): Subscription {
    const list = typeof patterns === "string" ? [patterns] : [...patterns];
    return new Live(this, this.options, list, handler as Handler<TidingsEvent>, {
      ...options,
      transport: options.transport ?? "ws",
    });
  }

  /**
   * A durable consumer: the server keeps its position. Each event is
   * acknowledged once `handler`'s promise resolves; what is not acknowledged
   * is delivered again (at-least-once). A handler that throws stops the
   * connection, which reopens and gets that event again.
   */
  consumer<M extends EventMap = EventMap>(
    name: string,
    patterns: string | readonly string[],
    handler: Handler<EventOf<M>>,
    options: ConsumerOptions = {},
  ): Subscription {
    const list = typeof patterns === "string" ? [patterns] : [...patterns];
    return new Live(this, this.options, list, handler as Handler<TidingsEvent>, {
      ...options,
      transport: "ws",
      consumer: name,
    });
  }

  /** `GET /consumers`. */
  consumers(signal?: AbortSignal): Promise<{ consumers: ConsumerInfo[] }> {
    return this.request("GET", "/consumers", { signal });
  }

  /** `GET /consumers/NAME`. */
  consumerInfo(name: string, signal?: AbortSignal): Promise<ConsumerInfo> {
    return this.request("GET", `/consumers/${encodeURIComponent(name)}`, { signal });
  }

  /** `POST /consumers/NAME/ack`: everything up to `seq` is done. */
  ack(name: string, seq: number, signal?: AbortSignal): Promise<unknown> {
    return this.request("POST", `/consumers/${encodeURIComponent(name)}/ack`, { body: { seq }, signal });
  }

  /** `DELETE /consumers/NAME`. */
  deleteConsumer(name: string, signal?: AbortSignal): Promise<unknown> {
    return this.request("DELETE", `/consumers/${encodeURIComponent(name)}`, { signal });
  }

  /** `GET /channels`. */
  channels(signal?: AbortSignal): Promise<{ channels: Record<string, number>; total_channels: number }> {
    return this.request("GET", "/channels", { signal });
  }
}

export interface ConsumerInfo {
  name: string;
  patterns: string[];
  cursor: number;
  last_seq: number;
  lag: number;
  connected: boolean;
}

interface LiveOptions extends SubscribeOptions {
  transport: Transport;
  consumer?: string;
}

/** Sent by the server on a socket (control messages carry a `type`). */
interface Control {
  type: string;
  [k: string]: unknown;
}

class Closed extends Error {}

/** One subscription over whichever transport, reconnecting until stopped. */
class Live implements Subscription {
  readonly ready: Promise<void>;
  readonly closed: Promise<void>;
  lastSeq: number | undefined;
  state: ConnectionState = "connecting";
  private list: string[];
  private readonly stop = new AbortController();
  private connection?: AbortController;
  private socket?: SocketLike;
  private readyResolve!: () => void;
  private readyReject!: (e: unknown) => void;
  private isReady = false;
  /** Set when a connection ends in a way that reconnecting cannot fix. */
  private fatal?: TidingsError;
  /** Replies to our socket commands, oldest first. */
  private pending: { resolve: () => void; reject: (e: unknown) => void }[] = [];

  constructor(
    private readonly client: TidingsClient,
    private readonly clientOptions: ClientOptions,
    patterns: string[],
    private readonly handler: Handler<TidingsEvent>,
    private readonly options: LiveOptions,
  ) {
    this.list = [...new Set(patterns)];
    this.lastSeq = options.after;
    this.ready = new Promise((res, rej) => {
      this.readyResolve = res;
      this.readyReject = rej;
    });
    this.ready.catch(() => {}); // observed through `closed` / onError as well
    if (options.signal) {
      if (options.signal.aborted) this.stop.abort();
      else options.signal.addEventListener("abort", () => this.unsubscribe(), { once: true });
    }
    this.closed = this.run();
  }

  get patterns(): readonly string[] {
    return this.list;
  }

  unsubscribe(): void {
    this.stop.abort();
    // Ends the connection (a socket sends its last acknowledgement first).
    this.connection?.abort();
  }

  async addPattern(pattern: string): Promise<void> {
    if (this.list.includes(pattern)) return;
    await this.change(pattern, true);
  }

  async removePattern(pattern: string): Promise<void> {
    if (!this.list.includes(pattern)) return;
    await this.change(pattern, false);
  }

  private async change(pattern: string, add: boolean): Promise<void> {
    const next = add ? [...this.list, pattern] : this.list.filter((p) => p !== pattern);
    const socket = this.socket;
    if (this.options.transport === "ws" && socket && socket.readyState === 1) {
      // Live: the server answers subscribed/unsubscribed (or an error).
      const reply = new Promise<void>((resolve, reject) => this.pending.push({ resolve, reject }));
      socket.send(JSON.stringify({ op: add ? "subscribe" : "unsubscribe", pattern }));
      await reply;
      this.list = next;
      return;
    }
    // SSE (or a socket that is not open): reconnect with the new list,
    // from the last seq delivered.
    this.list = next;
    this.connection?.abort();
  }

  private setState(s: ConnectionState) {
    if (this.state === s) return;
    this.state = s;
    this.options.onState?.(s);
  }

  private markReady() {
    if (!this.isReady) {
      this.isReady = true;
      this.readyResolve();
    }
  }

  private async run(): Promise<void> {
    const min = this.clientOptions.minBackoffMs ?? 250;
    const max = this.clientOptions.maxBackoffMs ?? 10_000;
    let attempt = 0;
    try {
      // "From now" is resolved once, before the first connection, so a
      // reconnect before the first event still resumes exactly.
      if (this.lastSeq === undefined && !this.options.consumer) {
        this.lastSeq = await this.retrying(() => this.client.lastSeq(this.stop.signal));
      }
      while (!this.stop.signal.aborted) {
        this.setState(attempt === 0 ? "connecting" : "reconnecting");
        let opened = false;
        try {
          opened = await this.connectOnce();
        } catch (e) {
          if (e instanceof TidingsError && e.permanent) throw e;
          if (!this.stop.signal.aborted) this.options.onError?.(e, false);
        }
        if (this.stop.signal.aborted) break;
        if (this.fatal) throw this.fatal;
        if (opened) attempt = 0;
        const cap = Math.min(max, min * 2 ** attempt);
        attempt = Math.min(attempt + 1, 30);
        // Jitter: somewhere in [cap/2, cap].
        await sleep(cap / 2 + Math.random() * (cap / 2), this.stop.signal);
      }
    } catch (e) {
      if (!this.stop.signal.aborted) {
        this.options.onError?.(e, true);
        this.readyReject(e);
      }
    } finally {
      this.setState("closed");
      this.stop.abort();
      for (const p of this.pending.splice(0)) p.reject(new Error("subscription closed"));
      if (!this.isReady) this.readyReject(new Error("subscription closed before it opened"));
    }
  }

  /** Runs `f` until it succeeds or the subscription stops, backing off between tries. */
  private async retrying<T>(f: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await f();
      } catch (e) {
        if (this.stop.signal.aborted) throw new Closed();
        if (e instanceof TidingsError && e.permanent) throw e;
        this.options.onError?.(e, false);
        const cap = Math.min(this.clientOptions.maxBackoffMs ?? 10_000, (this.clientOptions.minBackoffMs ?? 250) * 2 ** attempt);
        await sleep(cap / 2 + Math.random() * (cap / 2), this.stop.signal);
      }
    }
  }

  private params(token: string | undefined): Record<string, string | number | readonly string[] | undefined> {
    return {
      pattern: this.list,
      after: this.lastSeq,
      filter: this.options.filter,
      consumer: this.options.consumer,
      token,
    };
  }

  /** Hands one event to the handler, in order, once. Returns false to drop the connection. */
  private async deliver(event: TidingsEvent, ack?: (seq: number) => void): Promise<boolean> {
    if (this.lastSeq !== undefined && event.seq <= this.lastSeq) {
      // Already handled (a resume overlapped): a consumer re-acknowledges.
      ack?.(event.seq);
      return true;
    }
    try {
      await this.handler(event);
    } catch (e) {
      this.options.onError?.(e, false);
      if (ack) return false; // not acknowledged: get it again on a new connection
    }
    this.lastSeq = event.seq;
    ack?.(event.seq);
    return true;
  }

  private lagged(c: Control) {
    const missed = Number(c.missed);
    const resumeFrom = Number(c.resume_from);
    if (resumeFrom > 0 && (this.lastSeq === undefined || resumeFrom - 1 > this.lastSeq)) {
      this.lastSeq = resumeFrom - 1;
    }
    this.options.onLag?.({ missed, resumeFrom });
  }

  /** One connection, until it ends. True if it opened. */
  private connectOnce(): Promise<boolean> {
    return this.options.transport === "sse" ? this.sseOnce() : this.wsOnce();
  }

  private async wsOnce(): Promise<boolean> {
    const Ctor = await webSocketCtor();
    const token = await this.client.token();
    const url = this.client.url("/ws", this.params(token));
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const idle = this.clientOptions.idleTimeoutMs ?? 45_000;
    const conn = new AbortController();
    this.connection = conn;
    if (this.stop.signal.aborted) return false;
    const onStop = () => conn.abort();
    this.stop.signal.addEventListener("abort", onStop, { once: true });
    return new Promise<boolean>((resolve, reject) => {
      let opened = false;
      let lastHeard = Date.now();
      let chain: Promise<void> = Promise.resolve();
      const socket = new Ctor(url.href);
      this.socket = socket;
      const timer = setInterval(() => {
        if (Date.now() - lastHeard > idle) {
          socket.close(4000, "idle");
          finish();
        } else if (socket.readyState === 1 && Date.now() - lastHeard > idle / 3) {
          socket.send(JSON.stringify({ op: "ping" }));
        }
      }, Math.max(100, Math.min(5000, idle / 6)));
      // Acknowledgements are cumulative, so they are coalesced: at most one
      // per ACK_INTERVAL_MS (the server rate-limits socket commands), and a
      // last one when the connection is closed on purpose.
      let ackWanted = 0;
      let ackSent = 0;
      let ackAt = 0;
      let ackTimer: ReturnType<typeof setTimeout> | undefined;
      const flushAck = () => {
        clearTimeout(ackTimer);
        ackTimer = undefined;
        if (ackWanted > ackSent && socket.readyState === 1) {
          socket.send(JSON.stringify({ op: "ack", seq: ackWanted }));
          ackSent = ackWanted;
          ackAt = Date.now();
        }
      };
      const ack = this.options.consumer
        ? (seq: number) => {
            if (seq > ackWanted) ackWanted = seq;
            ackTimer ??= setTimeout(flushAck, Math.max(0, ACK_INTERVAL_MS - (Date.now() - ackAt)));
          }
        : undefined;
      let done = false;
      let halted = false;
      const finish = (error?: unknown) => {
        if (done) return;
        done = true;
        clearInterval(timer);
        flushAck();
        conn.signal.removeEventListener("abort", onAbort);
        this.stop.signal.removeEventListener("abort", onStop);
        if (this.socket === socket) this.socket = undefined;
        for (const p of this.pending.splice(0)) p.reject(new Error("connection closed"));
        try {
          socket.close(1000, "closed by the client");
        } catch {
          // already closed
        }
        // Let deliveries already queued finish before reporting the end.
        chain.then(() => (error && !opened ? reject(error) : resolve(opened)));
      };
      const onAbort = () => finish();
      conn.signal.addEventListener("abort", onAbort, { once: true });
      socket.onmessage = (ev) => {
        lastHeard = Date.now();
        if (done) return;
        let msg: Control | TidingsEvent;
        try {
          msg = JSON.parse(String(ev.data));
        } catch {
          return;
        }
        if ("type" in msg && typeof msg.type === "string") {
          this.control(msg as Control, () => {
            opened = true;
          });
          if (msg.type === "lagged") chain = chain.then(() => this.lagged(msg as Control));
          return;
        }
        const event = msg as TidingsEvent;
        // Events already received are handed over even if the socket
        // closes meanwhile; only a failed consumer handler stops the rest
        // (they come again on the next connection).
        chain = chain.then(async () => {
          if (halted || this.stop.signal.aborted) return;
          if (!(await this.deliver(event, ack))) {
            halted = true;
            finish();
          }
        });
      };
      socket.onclose = (ev) => {
        if (opened && this.options.consumer && (ev.code === 4409 || /took this consumer over|deleted/i.test(ev.reason ?? ""))) {
          // Another connection has this consumer now (or it was deleted):
          // reconnecting would only take it back. Stop, and say why.
          this.fatal = new TidingsError(409, "consumer_taken_over", ev.reason);
        }
        if (!opened && !done) {
          // Refused before the welcome: ask the same thing over HTTP to
          // learn why (browsers do not show an upgrade's status).
          this.probe(token).then((e) => finish(e), () => finish());
        } else finish();
      };
      socket.onerror = () => {};
    });
  }

  /** Handles a control message on a socket. */
  private control(c: Control, onWelcome: () => void) {
    switch (c.type) {
      case "connection":
        onWelcome();
        this.setState("open");
        this.markReady();
        break;
      case "subscribed":
      case "unsubscribed":
        this.pending.shift()?.resolve();
        break;
      case "error": {
        const err = new TidingsError(400, String(c.code ?? "error"), String(c.error ?? "error"));
        const p = this.pending.shift();
        if (p) p.reject(err);
        else this.options.onError?.(err, false);
        break;
      }
      default:
        break; // pong, lagged (handled in order by the caller), future types
    }
  }

  /** Why a socket was refused: the same question over HTTP, without side effects. */
  private async probe(token: string | undefined): Promise<TidingsError | undefined> {
    if (this.options.consumer) {
      // A consumer's refusal (a pattern conflict, its scope) shows on its own route.
      try {
        const info = await this.client.consumerInfo(this.options.consumer);
        const same = info.patterns.length === this.list.length && info.patterns.every((p) => this.list.includes(p));
        if (!same) {
          return new TidingsError(409, "consumer_conflict", `consumer ${this.options.consumer} exists with patterns ${info.patterns.join(", ")}`);
        }
      } catch (e) {
        if (e instanceof TidingsError && e.status !== 404) return e;
      }
      return undefined;
    }
    const res = await fetch(
      this.client.url("/events", { pattern: this.list[0] ?? ">", limit: 1, filter: this.options.filter, token }),
    ).catch(() => undefined);
    if (!res || res.ok) return undefined;
    if (this.list.length > 1) {
      for (const p of this.list.slice(1)) {
        const r = await fetch(this.client.url("/events", { pattern: p, limit: 1, token })).catch(() => undefined);
        if (r && !r.ok) return errorFrom(r);
      }
    }
    return errorFrom(res);
  }

  private async sseOnce(): Promise<boolean> {
    const token = await this.client.token();
    const conn = new AbortController();
    this.connection = conn;
    const onStop = () => conn.abort();
    this.stop.signal.addEventListener("abort", onStop, { once: true });
    const idle = this.clientOptions.idleTimeoutMs ?? 45_000;
    let lastHeard = Date.now();
    const timer = setInterval(() => {
      if (Date.now() - lastHeard > idle) conn.abort();
    }, Math.max(100, Math.min(5000, idle / 6)));
    try {
      const headers: Record<string, string> = { accept: "text/event-stream" };
      if (token) headers.authorization = `Bearer ${token}`;
      const params = this.params(undefined);
      const res = await fetch(this.client.url("/sse", params), { headers, signal: conn.signal, cache: "no-store" });
      if (!res.ok) throw await errorFrom(res);
      if (!res.body) throw new Error("the SSE response has no body");
      this.setState("open");
      this.markReady();
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let event = "message";
      let data: string[] = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        lastHeard = Date.now();
        buffer += value;
        let nl: number;
        while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
          if (line === "") {
            if (data.length > 0) {
              const payload = data.join("\n");
              if (event === "message") {
                if (!(await this.deliver(JSON.parse(payload) as TidingsEvent))) return true;
              } else if (event === "lagged") {
                this.lagged(JSON.parse(payload) as Control);
              } else if (event === "close") {
                return true; // the server ended the stream: reconnect
              }
            }
            event = "message";
            data = [];
          } else if (line.startsWith(":")) {
            // keepalive comment
          } else {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            let val = colon < 0 ? "" : line.slice(colon + 1);
            if (val.startsWith(" ")) val = val.slice(1);
            if (field === "data") data.push(val);
            else if (field === "event") event = val || "message";
          }
        }
      }
      return true;
    } catch (e) {
      if (conn.signal.aborted) return true; // our own abort: a pattern change, idle, or stop
      throw e;
    } finally {
      clearInterval(timer);
      this.stop.signal.removeEventListener("abort", onStop);
    }
  }
}
