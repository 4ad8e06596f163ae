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
 *
 * This module is the package's entry and holds only the public API, re-
 * exported from: `types.ts` (the public types), `errors.ts`
 * (`TidingsError`), `client.ts` (`TidingsClient`: HTTP, publish, history,
 * consumers), `live.ts` (subscriptions: resume, backoff), `ws.ts` and
 * `sse.ts` (the two transports). Relative imports name the `.js` files,
 * so the build runs as is in browsers and Node, without a bundler.
 */
export { TidingsClient } from "./client.js";
export { TidingsError } from "./errors.js";
export type { ClientOptions, ConnectionState, ConsumerInfo, ConsumerOptions, EventMap, EventOf, Handler, HistoryOptions, HistoryPage, Lag, NewEvent, PublishOptions, SubscribeOptions, Subscription, TidingsEvent, TokenSource, Transport, } from "./types.js";
