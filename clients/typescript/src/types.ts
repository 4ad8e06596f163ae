/**
 * The public types: events and typed event maps, the options of every
 * call, history pages, subscriptions and consumers.
 *
 * Types only: its build is an empty module. The fields of events, pages
 * and consumer info are those of the server's JSON (`next_after`,
 * `last_seq`), passed through as the server sends them.
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

export interface ConsumerInfo {
  name: string;
  patterns: string[];
  cursor: number;
  last_seq: number;
  lag: number;
  connected: boolean;
}
