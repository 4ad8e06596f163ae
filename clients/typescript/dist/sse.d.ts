/**
 * The Server-Sent Events transport: one connection of a subscription over
 * `/sse`, read with `fetch` (so the token goes in a header, not the URL).
 *
 * Contract: events are handed to the subscription one at a time, in stream
 * order; a `lagged` event moves the resume point; the server's `close`
 * event, the end of the stream or an abort of our own (a pattern change,
 * no data for the idle timeout, unsubscribing) ends the connection as
 * opened, so the subscription reconnects from its last seq. A refusal is
 * thrown as a `TidingsError`.
 */
import type { Live } from "./live.js";
/** One SSE connection, until it ends. True if it opened. */
export declare function sseOnce(live: Live): Promise<boolean>;
