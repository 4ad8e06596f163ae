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

import { errorFrom } from "./errors.js";
import type { Control, Live } from "./live.js";
import type { TidingsEvent } from "./types.js";

/** One SSE connection, until it ends. True if it opened. */
export async function sseOnce(live: Live): Promise<boolean> {
  const token = await live.client.token();
  const conn = new AbortController();
  live.connection = conn;
  const onStop = () => conn.abort();
  live.stop.signal.addEventListener("abort", onStop, { once: true });
  const idle = live.clientOptions.idleTimeoutMs ?? 45_000;
  let lastHeard = Date.now();
  const timer = setInterval(() => {
    if (Date.now() - lastHeard > idle) conn.abort();
  }, Math.max(100, Math.min(5000, idle / 6)));
  try {
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (token) headers.authorization = `Bearer ${token}`;
    const params = live.params(undefined);
    const res = await fetch(live.client.url("/sse", params), { headers, signal: conn.signal, cache: "no-store" });
    if (!res.ok) throw await errorFrom(res);
    if (!res.body) throw new Error("the SSE response has no body");
    live.setState("open");
    live.markReady();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = "message";
    let data: string[] = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      lastHeard = Date.now();
      buffer += value;
      let nl: number;
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (data.length > 0) {
            const payload = data.join("\n");
            if (event === "message") {
              if (!(await live.deliver(JSON.parse(payload) as TidingsEvent))) return true;
            } else if (event === "lagged") {
              live.lagged(JSON.parse(payload) as Control);
            } else if (event === "close") {
              return true; // the server ended the stream: reconnect
            }
          }
          event = "message";
          data = [];
        } else if (line.startsWith(":")) {
          // keepalive comment
        } else {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "data") data.push(val);
          else if (field === "event") event = val || "message";
        }
      }
    }
    return true;
  } catch (e) {
    if (conn.signal.aborted) return true; // our own abort: a pattern change, idle, or stop
    throw e;
  } finally {
    clearInterval(timer);
    live.stop.signal.removeEventListener("abort", onStop);
  }
}
