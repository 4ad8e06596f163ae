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
export declare class TidingsError extends Error {
    readonly status: number;
    readonly code: string;
    /** Seconds, from `Retry-After`, when trying later can help. */
    readonly retryAfter?: number;
    constructor(status: number, code: string, message: string, retryAfter?: number);
    /** True for refusals that a later attempt may not get (not 408, 429, 5xx). */
    get permanent(): boolean;
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
/** A client of one Tidings server. */
export declare class TidingsClient {
    readonly baseUrl: string;
    private readonly options;
    constructor(baseUrl: string, options?: ClientOptions);
    /** The current token, if any. */
    token(): Promise<string | undefined>;
    /** `baseUrl + path` with `params` (arrays repeat the key; undefined is left out). */
    url(path: string, params?: Record<string, string | number | readonly string[] | undefined>): URL;
    /** A request to the server; a non-2xx answer is thrown as a {@link TidingsError}. */
    request<T = unknown>(method: string, path: string, init?: {
        params?: Record<string, string | number | readonly string[] | undefined>;
        body?: unknown;
        signal?: AbortSignal;
    }): Promise<T>;
    /** Publishes one event; answers with the committed envelope. */
    publish<N extends string, D>(name: N, data?: D, options?: PublishOptions): Promise<TidingsEvent<N, D>>;
    /** Publishes events atomically: all are committed, or none. */
    publishBatch(events: readonly NewEvent[], options?: {
        expectLast?: number;
        signal?: AbortSignal;
    }): Promise<TidingsEvent[]>;
    /** One page of history. */
    historyPage<M extends EventMap = EventMap>(pattern: string, options?: HistoryOptions): Promise<HistoryPage<EventOf<M>>>;
    /**
     * History as pages, oldest first, up to the log's end when the iteration
     * started: `for await (const page of client.history("orders.>")) …`.
     */
    history<M extends EventMap = EventMap>(pattern: string, options?: HistoryOptions): AsyncGenerator<HistoryPage<EventOf<M>>>;
    /** History event by event (see {@link history}). */
    historyEvents<M extends EventMap = EventMap>(pattern: string, options?: HistoryOptions): AsyncGenerator<EventOf<M>>;
    /** The log's last seq (from `/healthz`, which answers even while degraded). */
    lastSeq(signal?: AbortSignal): Promise<number>;
    /**
     * Subscribes `handler` to events matching any of `patterns`. Handlers run
     * one at a time, in seq order; a returned promise is awaited before the
     * next event.
     */
    subscribe<M extends EventMap = EventMap>(patterns: string | readonly string[], handler: Handler<EventOf<M>>, options?: SubscribeOptions): Subscription;
    /**
     * A durable consumer: the server keeps its position. Each event is
     * acknowledged once `handler`'s promise resolves; what is not acknowledged
     * is delivered again (at-least-once). A handler that throws stops the
     * connection, which reopens and gets that event again.
     */
    consumer<M extends EventMap = EventMap>(name: string, patterns: string | readonly string[], handler: Handler<EventOf<M>>, options?: ConsumerOptions): Subscription;
    /** `GET /consumers`. */
    consumers(signal?: AbortSignal): Promise<{
        consumers: ConsumerInfo[];
    }>;
    /** `GET /consumers/NAME`. */
    consumerInfo(name: string, signal?: AbortSignal): Promise<ConsumerInfo>;
    /** `POST /consumers/NAME/ack`: everything up to `seq` is done. */
    ack(name: string, seq: number, signal?: AbortSignal): Promise<unknown>;
    /** `DELETE /consumers/NAME`. */
    deleteConsumer(name: string, signal?: AbortSignal): Promise<unknown>;
    /** `GET /channels`. */
    channels(signal?: AbortSignal): Promise<{
        channels: Record<string, number>;
        total_channels: number;
    }>;
}
export interface ConsumerInfo {
    name: string;
    patterns: string[];
    cursor: number;
    last_seq: number;
    lag: number;
    connected: boolean;
}
