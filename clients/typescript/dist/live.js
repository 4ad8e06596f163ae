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
import { sseOnce } from "./sse.js";
import { wsOnce } from "./ws.js";
class Closed extends Error {
}
function sleep(ms, signal) {
    return new Promise((resolve) => {
        if (signal?.aborted)
            return resolve();
        const t = setTimeout(done, ms);
        function done() {
            clearTimeout(t);
            signal?.removeEventListener("abort", done);
            resolve();
        }
        signal?.addEventListener("abort", done, { once: true });
    });
}
/** One subscription over whichever transport, reconnecting until stopped. */
export class Live {
    client;
    clientOptions;
    handler;
    options;
    ready;
    closed;
    lastSeq;
    state = "connecting";
    list;
    // Shared with the transports (ws.ts, sse.ts), which run one connection
    // each: stopping, the current connection and socket, socket replies.
    stop = new AbortController();
    connection;
    socket;
    readyResolve;
    readyReject;
    isReady = false;
    /** Set when a connection ends in a way that reconnecting cannot fix. */
    fatal;
    /** Replies to our socket commands, oldest first. */
    pending = [];
    constructor(client, clientOptions, patterns, handler, options) {
        this.client = client;
        this.clientOptions = clientOptions;
        this.handler = handler;
        this.options = options;
        this.list = [...new Set(typeof patterns === "string" ? [patterns] : patterns)];
        this.lastSeq = options.after;
        this.ready = new Promise((res, rej) => {
            this.readyResolve = res;
            this.readyReject = rej;
        });
        this.ready.catch(() => { }); // observed through `closed` / onError as well
        if (options.signal) {
            if (options.signal.aborted)
                this.stop.abort();
            else
                options.signal.addEventListener("abort", () => this.unsubscribe(), { once: true });
        }
        this.closed = this.run();
    }
    get patterns() {
        return this.list;
    }
    unsubscribe() {
        this.stop.abort();
        // Ends the connection (a socket sends its last acknowledgement first).
        this.connection?.abort();
    }
    async addPattern(pattern) {
        if (this.list.includes(pattern))
            return;
        await this.change(pattern, true);
    }
    async removePattern(pattern) {
        if (!this.list.includes(pattern))
            return;
        await this.change(pattern, false);
    }
    async change(pattern, add) {
        const next = add ? [...this.list, pattern] : this.list.filter((p) => p !== pattern);
        const socket = this.socket;
        if (this.options.transport === "ws" && socket && socket.readyState === 1) {
            // Live: the server answers subscribed/unsubscribed (or an error).
            const reply = new Promise((resolve, reject) => this.pending.push({ resolve, reject }));
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
    setState(s) {
        if (this.state === s)
            return;
        this.state = s;
        this.options.onState?.(s);
    }
    markReady() {
        if (!this.isReady) {
            this.isReady = true;
            this.readyResolve();
        }
    }
    async run() {
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
                }
                catch (e) {
                    if (e instanceof TidingsError && e.permanent)
                        throw e;
                    if (!this.stop.signal.aborted)
                        this.options.onError?.(e, false);
                }
                if (this.stop.signal.aborted)
                    break;
                if (this.fatal)
                    throw this.fatal;
                if (opened)
                    attempt = 0;
                const cap = Math.min(max, min * 2 ** attempt);
                attempt = Math.min(attempt + 1, 30);
                // Jitter: somewhere in [cap/2, cap].
                await sleep(cap / 2 + Math.random() * (cap / 2), this.stop.signal);
            }
        }
        catch (e) {
            if (!this.stop.signal.aborted) {
                this.options.onError?.(e, true);
                this.readyReject(e);
            }
        }
        finally {
            this.setState("closed");
            this.stop.abort();
            for (const p of this.pending.splice(0))
                p.reject(new Error("subscription closed"));
            if (!this.isReady)
                this.readyReject(new Error("subscription closed before it opened"));
        }
    }
    /** Runs `f` until it succeeds or the subscription stops, backing off between tries. */
    async retrying(f) {
        for (let attempt = 0;; attempt++) {
            try {
                return await f();
            }
            catch (e) {
                if (this.stop.signal.aborted)
                    throw new Closed();
                if (e instanceof TidingsError && e.permanent)
                    throw e;
                this.options.onError?.(e, false);
                const cap = Math.min(this.clientOptions.maxBackoffMs ?? 10_000, (this.clientOptions.minBackoffMs ?? 250) * 2 ** attempt);
                await sleep(cap / 2 + Math.random() * (cap / 2), this.stop.signal);
            }
        }
    }
    params(token) {
        return {
            pattern: this.list,
            after: this.lastSeq,
            filter: this.options.filter,
            consumer: this.options.consumer,
            token,
        };
    }
    /** Hands one event to the handler, in order, once. Returns false to drop the connection. */
    async deliver(event, ack) {
        if (this.lastSeq !== undefined && event.seq <= this.lastSeq) {
            // Already handled (a resume overlapped): a consumer re-acknowledges.
            ack?.(event.seq);
            return true;
        }
        try {
            await this.handler(event);
        }
        catch (e) {
            this.options.onError?.(e, false);
            if (ack)
                return false; // not acknowledged: get it again on a new connection
        }
        this.lastSeq = event.seq;
        ack?.(event.seq);
        return true;
    }
    lagged(c) {
        const missed = Number(c.missed);
        const resumeFrom = Number(c.resume_from);
        if (resumeFrom > 0 && (this.lastSeq === undefined || resumeFrom - 1 > this.lastSeq)) {
            this.lastSeq = resumeFrom - 1;
        }
        this.options.onLag?.({ missed, resumeFrom });
    }
    /** One connection, until it ends. True if it opened. */
    connectOnce() {
        return this.options.transport === "sse" ? sseOnce(this) : wsOnce(this);
    }
}
