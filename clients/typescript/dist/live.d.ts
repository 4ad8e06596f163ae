/**
 * The subscription machinery: one `Live` per `subscribe` or `consumer`
 * call, whichever the transport. Internal: the package entry does not
 * export it.
 *
 * Contract: the handler gets every matching event once, in seq order, one
 * at a time. "From now" is resolved to a seq once, before the first
 * connection. A connection that ends is reopened (capped exponential
 * backoff with jitter) from the last seq delivered, and anything at or
 * below it is dropped, so a resume never duplicates; a permanent refusal
 * or a consumer taken over stops the subscription. The transports
 * (`ws.ts`, `sse.ts`) run one connection each and hand events back
 * through `deliver` and `lagged`.
 */
import { TidingsError } from "./errors.js";
import type { TidingsClient } from "./client.js";
import type { ClientOptions, ConnectionState, Handler, SubscribeOptions, Subscription, TidingsEvent, Transport } from "./types.js";
import { type SocketLike } from "./ws.js";
export interface LiveOptions extends SubscribeOptions {
    transport: Transport;
    consumer?: string;
}
/** Sent by the server on a socket (control messages carry a `type`). */
export interface Control {
    type: string;
    [k: string]: unknown;
}
/** One subscription over whichever transport, reconnecting until stopped. */
export declare class Live implements Subscription {
    readonly client: TidingsClient;
    readonly clientOptions: ClientOptions;
    private readonly handler;
    readonly options: LiveOptions;
    readonly ready: Promise<void>;
    readonly closed: Promise<void>;
    lastSeq: number | undefined;
    state: ConnectionState;
    private list;
    readonly stop: AbortController;
    connection?: AbortController;
    socket?: SocketLike;
    private readyResolve;
    private readyReject;
    private isReady;
    /** Set when a connection ends in a way that reconnecting cannot fix. */
    fatal?: TidingsError;
    /** Replies to our socket commands, oldest first. */
    pending: {
        resolve: () => void;
        reject: (e: unknown) => void;
    }[];
    constructor(client: TidingsClient, clientOptions: ClientOptions, patterns: string | readonly string[], handler: Handler<TidingsEvent>, options: LiveOptions);
    get patterns(): readonly string[];
    unsubscribe(): void;
    addPattern(pattern: string): Promise<void>;
    removePattern(pattern: string): Promise<void>;
    private change;
    setState(s: ConnectionState): void;
    markReady(): void;
    private run;
    /** Runs `f` until it succeeds or the subscription stops, backing off between tries. */
    private retrying;
    params(token: string | undefined): Record<string, string | number | readonly string[] | undefined>;
    /** Hands one event to the handler, in order, once. Returns false to drop the connection. */
    deliver(event: TidingsEvent, ack?: (seq: number) => void): Promise<boolean>;
    lagged(c: Control): void;
    /** One connection, until it ends. True if it opened. */
    private connectOnce;
}
