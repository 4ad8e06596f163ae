/**
 * The WebSocket transport: one connection of a subscription or a durable
 * consumer over `/ws`.
 *
 * In Node without a global `WebSocket` (Node 20), the optional peer `ws`
 * is imported dynamically the first time a socket is needed; browsers never
 * load it. Contract: events are handed to the subscription in the order
 * they arrive, and those already received are handed over even if the
 * socket closes meanwhile; a consumer's acknowledgements are cumulative and
 * coalesced (at most one per 100 ms, and a last one when the connection is
 * closed on purpose). A socket refused before the server's welcome is
 * explained by asking the same thing over HTTP.
 */
import type { Live } from "./live.js";
export interface SocketLike {
    readyState: number;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onopen: ((ev: unknown) => void) | null;
    onmessage: ((ev: {
        data: unknown;
    }) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((ev: unknown) => void) | null;
}
/** One WebSocket connection, until it ends. True if it opened. */
export declare function wsOnce(live: Live): Promise<boolean>;
