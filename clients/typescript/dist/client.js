/**
 * `TidingsClient`: one server's HTTP API (publish, history, consumers,
 * channels) and the entry to live subscriptions.
 *
 * Contract: every `request` carries the current token (a function is called
 * each time) and a non-2xx answer is thrown as a `TidingsError`; history
 * iterates oldest first up to the log's end when it started; `subscribe`
 * and `consumer` return a `Subscription` at once (see `live.ts`).
 */
import { errorFrom } from "./errors.js";
import { Live } from "./live.js";
/** A client of one Tidings server. */
export class TidingsClient {
    baseUrl;
    options;
    constructor(baseUrl, options = {}) {
        const base = new URL(baseUrl, globalThis.location?.href);
        this.baseUrl = base.href.replace(/\/+$/, "");
        this.options = options;
    }
    /** The current token, if any. */
    async token() {
        const t = this.options.token;
        return typeof t === "function" ? await t() : t;
    }
    /** `baseUrl + path` with `params` (arrays repeat the key; undefined is left out). */
    url(path, params = {}) {
        const url = new URL(this.baseUrl + path);
        for (const [k, v] of Object.entries(params)) {
            if (v === undefined)
                continue;
            if (Array.isArray(v))
                for (const item of v)
                    url.searchParams.append(k, String(item));
            else
                url.searchParams.set(k, String(v));
        }
        return url;
    }
    /** A request to the server; a non-2xx answer is thrown as a {@link TidingsError}. */
    async request(method, path, init = {}) {
        const headers = { accept: "application/json" };
        const token = await this.token();
        if (token)
            headers.authorization = `Bearer ${token}`;
        let body;
        if (init.body !== undefined) {
            headers["content-type"] = "application/json";
            body = JSON.stringify(init.body);
        }
        const res = await fetch(this.url(path, init.params), { method, headers, body, signal: init.signal });
        if (!res.ok)
            throw await errorFrom(res);
        const text = await res.text();
        return (text ? JSON.parse(text) : undefined);
    }
    /** Publishes one event; answers with the committed envelope. */
    publish(name, data, options = {}) {
        const body = { name, data: data ?? null };
        if (options.key !== undefined)
            body.key = options.key;
        if (options.source !== undefined)
            body.source = options.source;
        if (options.time !== undefined)
            body.time = options.time;
        return this.request("POST", "/events", {
            body,
            params: { expect_last: options.expectLast },
            signal: options.signal,
        });
    }
    /** Publishes events atomically: all are committed, or none. */
    publishBatch(events, options = {}) {
        return this.request("POST", "/events", {
            body: events.map((e) => ({ ...e, data: e.data ?? null })),
            params: { expect_last: options.expectLast },
            signal: options.signal,
        });
    }
    /** One page of history. */
    historyPage(pattern, options = {}) {
        return this.request("GET", "/events", {
            params: { pattern, after: options.after ?? 0, limit: options.limit, filter: options.filter },
            signal: options.signal,
        });
    }
    /**
     * History as pages, oldest first, up to the log's end when the iteration
     * started: `for await (const page of client.history("orders.>")) …`.
     */
    async *history(pattern, options = {}) {
        let after = options.after ?? 0;
        let end;
        for (;;) {
            const page = await this.historyPage(pattern, { ...options, after });
            end ??= page.last_seq;
            if (page.events.length > 0)
                yield page;
            if (page.next_after <= after || page.next_after >= end)
                return;
            after = page.next_after;
        }
    }
    /** History event by event (see {@link history}). */
    async *historyEvents(pattern, options = {}) {
        for await (const page of this.history(pattern, options))
            yield* page.events;
    }
    /** The log's last seq (from `/healthz`, which answers even while degraded). */
    async lastSeq(signal) {
        const res = await fetch(this.url("/healthz"), { signal });
        const body = (await res.json());
        if (typeof body.last_seq !== "number")
            throw await errorFrom(res);
        return body.last_seq;
    }
    /**
     * Subscribes `handler` to events matching any of `patterns`. Handlers run
     * one at a time, in seq order; a returned promise is awaited before the
     * next event.
     */
    subscribe(patterns, handler, options = {}) {
        return new Live(this, this.options, patterns, handler, {
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
    consumer(name, patterns, handler, options = {}) {
        return new Live(this, this.options, patterns, handler, {
            ...options,
            transport: "ws",
            consumer: name,
        });
    }
    /** `GET /consumers`. */
    consumers(signal) {
        return this.request("GET", "/consumers", { signal });
    }
    /** `GET /consumers/NAME`. */
    consumerInfo(name, signal) {
        return this.request("GET", `/consumers/${encodeURIComponent(name)}`, { signal });
    }
    /** `POST /consumers/NAME/ack`: everything up to `seq` is done. */
    ack(name, seq, signal) {
        return this.request("POST", `/consumers/${encodeURIComponent(name)}/ack`, { body: { seq }, signal });
    }
    /** `DELETE /consumers/NAME`. */
    deleteConsumer(name, signal) {
        return this.request("DELETE", `/consumers/${encodeURIComponent(name)}`, { signal });
    }
    /** `GET /channels`. */
    channels(signal) {
        return this.request("GET", "/channels", { signal });
    }
}
