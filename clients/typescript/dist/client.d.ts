/**
 * `TidingsClient`: one server's HTTP API (publish, history, consumers,
 * channels) and the entry to live subscriptions.
 *
 * Contract: every `request` carries the current token (a function is called
 * each time) and a non-2xx answer is thrown as a `TidingsError`; history
 * iterates oldest first up to the log's end when it started; `subscribe`
 * and `consumer` return a `Subscription` at once (see `live.ts`).
 */
import type { ClientOptions, ConsumerInfo, ConsumerOptions, EventMap, EventOf, Handler, HistoryOptions, HistoryPage, NewEvent, PublishOptions, SubscribeOptions, Subscription, TidingsEvent } from "./types.js";
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
