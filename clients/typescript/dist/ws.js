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
import { TidingsError, errorFrom } from "./errors.js";
/** Consumer acknowledgements are sent at most this often (they are cumulative). */
const ACK_INTERVAL_MS = 100;
let socketCtor;
function webSocketCtor() {
    if (!socketCtor) {
        const g = globalThis;
        if (g.WebSocket) {
            socketCtor = Promise.resolve(g.WebSocket);
        }
        else {
            // Node 20: the optional peer `ws`. The name is a variable so bundlers
            // for browsers leave it alone.
            const name = "ws";
            socketCtor = import(/* @vite-ignore */ name).then((m) => {
                const ctor = m.WebSocket ?? m.default;
                if (!ctor)
                    throw new Error("the `ws` package did not export WebSocket");
                return ctor;
            }, () => {
                throw new Error("no global WebSocket: install the `ws` package (npm i ws) on Node < 22");
            });
        }
    }
    return socketCtor;
}
/** One WebSocket connection, until it ends. True if it opened. */
export async function wsOnce(live) {
    const Ctor = await webSocketCtor();
    const token = await live.client.token();
    const url = live.client.url("/ws", live.params(token));
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const idle = live.clientOptions.idleTimeoutMs ?? 45_000;
    const conn = new AbortController();
    live.connection = conn;
    if (live.stop.signal.aborted)
        return false;
    const onStop = () => conn.abort();
    live.stop.signal.addEventListener("abort", onStop, { once: true });
    return new Promise((resolve, reject) => {
        let opened = false;
        let lastHeard = Date.now();
        let chain = Promise.resolve();
        const socket = new Ctor(url.href);
        live.socket = socket;
        const timer = setInterval(() => {
            if (Date.now() - lastHeard > idle) {
                socket.close(4000, "idle");
                finish();
            }
            else if (socket.readyState === 1 && Date.now() - lastHeard > idle / 3) {
                socket.send(JSON.stringify({ op: "ping" }));
            }
        }, Math.max(100, Math.min(5000, idle / 6)));
        // Acknowledgements are cumulative, so they are coalesced: at most one
        // per ACK_INTERVAL_MS (the server rate-limits socket commands), and a
        // last one when the connection is closed on purpose.
        let ackWanted = 0;
        let ackSent = 0;
        let ackAt = 0;
        let ackTimer;
        const flushAck = () => {
            clearTimeout(ackTimer);
            ackTimer = undefined;
            if (ackWanted > ackSent && socket.readyState === 1) {
                socket.send(JSON.stringify({ op: "ack", seq: ackWanted }));
                ackSent = ackWanted;
                ackAt = Date.now();
            }
        };
        const ack = live.options.consumer
            ? (seq) => {
                if (seq > ackWanted)
                    ackWanted = seq;
                ackTimer ??= setTimeout(flushAck, Math.max(0, ACK_INTERVAL_MS - (Date.now() - ackAt)));
            }
            : undefined;
        let done = false;
        let halted = false;
        const finish = (error) => {
            if (done)
                return;
            done = true;
            clearInterval(timer);
            flushAck();
            conn.signal.removeEventListener("abort", onAbort);
            live.stop.signal.removeEventListener("abort", onStop);
            if (live.socket === socket)
                live.socket = undefined;
            for (const p of live.pending.splice(0))
                p.reject(new Error("connection closed"));
            try {
                socket.close(1000, "closed by the client");
            }
            catch {
                // already closed
            }
            // Let deliveries already queued finish before reporting the end.
            chain.then(() => (error && !opened ? reject(error) : resolve(opened)));
        };
        const onAbort = () => finish();
        conn.signal.addEventListener("abort", onAbort, { once: true });
        socket.onmessage = (ev) => {
            lastHeard = Date.now();
            if (done)
                return;
            let msg;
            try {
                msg = JSON.parse(String(ev.data));
            }
            catch {
                return;
            }
            if ("type" in msg && typeof msg.type === "string") {
                control(live, msg, () => {
                    opened = true;
                });
                if (msg.type === "lagged")
                    chain = chain.then(() => live.lagged(msg));
                return;
            }
            const event = msg;
            // Events already received are handed over even if the socket
            // closes meanwhile; only a failed consumer handler stops the rest
            // (they come again on the next connection).
            chain = chain.then(async () => {
                if (halted || live.stop.signal.aborted)
                    return;
                if (!(await live.deliver(event, ack))) {
                    halted = true;
                    finish();
                }
            });
        };
        socket.onclose = (ev) => {
            if (opened && live.options.consumer && (ev.code === 4409 || /took this consumer over|deleted/i.test(ev.reason ?? ""))) {
                // Another connection has this consumer now (or it was deleted):
                // reconnecting would only take it back. Stop, and say why.
                live.fatal = new TidingsError(409, "consumer_taken_over", ev.reason);
            }
            if (!opened && !done) {
                // Refused before the welcome: ask the same thing over HTTP to
                // learn why (browsers do not show an upgrade's status).
                probe(live, token).then((e) => finish(e), () => finish());
            }
            else
                finish();
        };
        socket.onerror = () => { };
    });
}
/** Handles a control message on a socket. */
function control(live, c, onWelcome) {
    switch (c.type) {
        case "connection":
            onWelcome();
            live.setState("open");
            live.markReady();
            break;
        case "subscribed":
        case "unsubscribed":
            live.pending.shift()?.resolve();
            break;
        case "error": {
            const err = new TidingsError(400, String(c.code ?? "error"), String(c.error ?? "error"));
            const p = live.pending.shift();
            if (p)
                p.reject(err);
            else
                live.options.onError?.(err, false);
            break;
        }
        default:
            break; // pong, lagged (handled in order by the caller), future types
    }
}
/** Why a socket was refused: the same question over HTTP, without side effects. */
async function probe(live, token) {
    if (live.options.consumer) {
        // A consumer's refusal (a pattern conflict, its scope) shows on its own route.
        try {
            const info = await live.client.consumerInfo(live.options.consumer);
            const same = info.patterns.length === live.patterns.length && info.patterns.every((p) => live.patterns.includes(p));
            if (!same) {
                return new TidingsError(409, "consumer_conflict", `consumer ${live.options.consumer} exists with patterns ${info.patterns.join(", ")}`);
            }
        }
        catch (e) {
            if (e instanceof TidingsError && e.status !== 404)
                return e;
        }
        return undefined;
    }
    const res = await fetch(live.client.url("/events", { pattern: live.patterns[0] ?? ">", limit: 1, filter: live.options.filter, token })).catch(() => undefined);
    if (!res || res.ok)
        return undefined;
    if (live.patterns.length > 1) {
        for (const p of live.patterns.slice(1)) {
            const r = await fetch(live.client.url("/events", { pattern: p, limit: 1, token })).catch(() => undefined);
            if (r && !r.ok)
                return errorFrom(r);
        }
    }
    return errorFrom(res);
}
