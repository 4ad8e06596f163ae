// The client against the real `tidings` binary, in Node.
import { test } from "node:test";
import assert from "node:assert/strict";
import { TidingsClient, TidingsError } from "../dist/index.js";
import { startServer, restartOn, tempDir, until, sleep, publishSurely } from "./harness.mjs";

const FAST = { minBackoffMs: 50, maxBackoffMs: 500 };

for (const transport of ["ws", "sse"]) {
  test(`${transport}: a server restart mid-stream: every seq once, in order`, async () => {
    const tmp = tempDir();
    let server = await startServer({ dataDir: tmp.dir });
    const port = server.port;
    const client = new TidingsClient(server.url, FAST);
    const seen = [];
    const states = [];
    const sub = client.subscribe("restart.>", (e) => { seen.push(e.seq); }, {
      transport, after: 0, onState: (s) => states.push(s),
    });
    try {
      await sub.ready;
      const total = 300;
      for (let i = 1; i <= total; i++) {
        if (i === 120) {
          await server.kill("SIGKILL");
          // Publishes fail while it is down; the subscriber reconnects with backoff.
          setTimeout(async () => { server = await restartOn(port, { dataDir: tmp.dir }); }, 300);
        }
        await publishSurely(client, `restart.e${i % 3}`, { i }, `k${i}`);
      }
      await until(() => seen.length >= total, 20_000, `${total} events (have ${seen.length})`);
      await sleep(200); // nothing more may arrive
      assert.deepEqual(seen, Array.from({ length: total }, (_, i) => i + 1));
      assert.ok(states.includes("reconnecting"), `states: ${states}`);
    } finally {
      sub.unsubscribe();
      await sub.closed;
      await server.kill();
      tmp.remove();
    }
  });
}

for (const transport of ["ws", "sse"]) {
  test(`${transport}: events pruned by retention are reported to onLag, then delivery goes on`, async () => {
    const tmp = tempDir();
    const server = await startServer({ dataDir: tmp.dir, env: { TIDINGS_RETENTION_MAX_COUNT: "10" } });
    try {
      const client = new TidingsClient(server.url, FAST);
      await client.publishBatch(Array.from({ length: 40 }, (_, i) => ({ name: "lag.x", data: { i } })));
      await until(async () => (await client.historyPage(">", { limit: 1 })).events[0]?.seq > 1, 10_000, "retention to prune");
      const lags = [];
      const seen = [];
      const sub = client.subscribe("lag.>", (e) => { seen.push(e.seq); }, { transport, after: 0, onLag: (l) => lags.push(l) });
      await until(() => seen.at(-1) === 40, 10_000, "the retained events");
      const first = seen[0];
      assert.ok(first > 1, `first delivered seq ${first}`);
      assert.deepEqual(lags, [{ missed: first - 1, resumeFrom: first }]);
      assert.deepEqual(seen, Array.from({ length: 41 - first }, (_, i) => first + i));
      sub.unsubscribe();
      await sub.closed;
    } finally {
      await server.kill();
      tmp.remove();
    }
  });
}

test("ws: live addPattern and removePattern", async () => {
  const server = await startServer();
  try {
    const client = new TidingsClient(server.url, FAST);
    const got = [];
    const sub = client.subscribe("a.*", (e) => { got.push(e.name); });
    await sub.ready;
    await client.publish("a.one", 1);
    await client.publish("b.one", 1);
    await until(() => got.length === 1);
    await sub.addPattern("b.*");
    await client.publish("b.two", 2);
    await until(() => got.length === 2);
    await sub.removePattern("a.*");
    await client.publish("a.three", 3);
    await client.publish("b.three", 3);
    await until(() => got.length === 3);
    await sleep(100);
    assert.deepEqual(got, ["a.one", "b.two", "b.three"]);
    assert.deepEqual([...sub.patterns], ["b.*"]);
    sub.unsubscribe();
    await sub.closed;
  } finally {
    await server.kill();
  }
});

test("sse: addPattern reconnects from the last seq", async () => {
  const server = await startServer();
  try {
    const client = new TidingsClient(server.url, FAST);
    const got = [];
    const sub = client.subscribe("a.*", (e) => { got.push(e.seq); }, { transport: "sse" });
    await sub.ready;
    await client.publish("a.one", 1);
    await until(() => got.length === 1);
    await sub.addPattern("b.*");
    await client.publish("b.two", 2);
    await client.publish("a.three", 3);
    await until(() => got.length === 3);
    await sleep(100);
    assert.deepEqual(got, [1, 2, 3]);
    sub.unsubscribe();
    await sub.closed;
  } finally {
    await server.kill();
  }
});

test("history pages, publishBatch, expectLast, typed errors", async () => {
  const server = await startServer();
  try {
    const client = new TidingsClient(server.url);
    const batch = await client.publishBatch(
      Array.from({ length: 25 }, (_, i) => ({ name: i % 2 ? "h.odd" : "h.even", data: { i } })),
    );
    assert.equal(batch.length, 25);
    assert.equal(batch[24].seq, 25);
    const pages = [];
    for await (const page of client.history("h.odd", { limit: 5 })) pages.push(page.events.map((e) => e.data.i));
    assert.deepEqual(pages.flat(), Array.from({ length: 12 }, (_, i) => 2 * i + 1));
    assert.ok(pages.length >= 3);
    const all = [];
    for await (const e of client.historyEvents(">", { after: 20 })) all.push(e.seq);
    assert.deepEqual(all, [21, 22, 23, 24, 25]);

    await assert.rejects(client.publish("bad..name", {}), (e) => {
      assert.ok(e instanceof TidingsError);
      assert.equal(e.status, 400);
      assert.equal(e.code, "invalid_name");
      assert.match(e.message, /\S/);
      return true;
    });
    await assert.rejects(client.publish("h.x", 1, { expectLast: 3 }), (e) => e instanceof TidingsError && e.status === 409);
    await assert.rejects(client.historyPage("a..b").then(() => 0), (e) => e instanceof TidingsError && e.status === 400);
    // A refused subscription rejects `ready` with the server's error.
    const sub = client.subscribe("a..b", () => {});
    await assert.rejects(sub.ready, (e) => e instanceof TidingsError && e.status === 400 && e.code !== "http_error");
    await sub.closed;
    const sse = client.subscribe("a..b", () => {}, { transport: "sse" });
    await assert.rejects(sse.ready, (e) => e instanceof TidingsError && e.status === 400);
    await sse.closed;
    // An aborted signal ends a subscription.
    const ac = new AbortController();
    const s2 = client.subscribe(">", () => {}, { signal: ac.signal });
    await s2.ready;
    ac.abort();
    await s2.closed;
    assert.equal(s2.state, "closed");
  } finally {
    await server.kill();
  }
});

test("token auth: header for fetch, ?token= for sockets, 401 as TidingsError", async () => {
  // Tokens are a table: they come from a config file.
  const tmp = tempDir();
  const { writeFileSync } = await import("node:fs");
  const cfg = `${tmp.dir}/tidings.toml`;
  writeFileSync(cfg, `[[auth.tokens]]\ntoken = "s3cret"\npublish = [">"]\nsubscribe = [">"]\n`);
  const authed = await startServer({ args: ["--config", cfg] });
  try {
    const anon = new TidingsClient(authed.url);
    await assert.rejects(anon.publish("x.y", 1), (e) => e instanceof TidingsError && e.status === 401);
    const bad = anon.subscribe("x.>", () => {});
    await assert.rejects(bad.ready, (e) => e instanceof TidingsError && e.status === 401);
    const client = new TidingsClient(authed.url, { token: () => "s3cret" });
    const got = [];
    const ws = client.subscribe("x.>", (e) => { got.push(["ws", e.seq]); });
    const sse = client.subscribe("x.>", (e) => { got.push(["sse", e.seq]); }, { transport: "sse" });
    await Promise.all([ws.ready, sse.ready]);
    const e = await client.publish("x.y", { ok: true });
    await until(() => got.length === 2);
    assert.deepEqual(got.map((g) => g[1]), [e.seq, e.seq]);
    ws.unsubscribe();
    sse.unsubscribe();
  } finally {
    await authed.kill();
    tmp.remove();
  }
});

test("consumer: kill -9 and restart: nothing acknowledged twice, nothing lost", async (t) => {
  const tmp = tempDir();
  let server = await startServer({ dataDir: tmp.dir });
  const port = server.port;
  try {
    const probe = await fetch(`${server.url}/consumers`);
    if (probe.status === 404) {
      t.skip("the server has no durable consumers yet (GET /consumers is 404)");
      return;
    }
    const client = new TidingsClient(server.url, FAST);
    const total = 200;
    for (let i = 1; i <= 80; i++) await client.publish("work.item", { i });
    const first = [];
    const a = client.consumer("projector", "work.>", async (e) => {
      first.push(e.seq);
      await sleep(2);
    });
    await a.ready;
    await until(() => first.length >= 40, 10_000, "the consumer to start");
    await server.kill("SIGKILL");
    a.unsubscribe();
    await a.closed;
    server = await restartOn(port, { dataDir: tmp.dir });
    for (let i = 81; i <= total; i++) await client.publish("work.item", { i });
    const info = await client.consumerInfo("projector");
    const cursor = info.cursor;
    assert.ok(cursor <= first.at(-1), `cursor ${cursor} past what was handled (${first.at(-1)})`);
    // A new process: no memory of what the first one handled.
    const fresh = new TidingsClient(server.url, FAST);
    const second = [];
    const errors = [];
    const b = fresh.consumer("projector", "work.>", (e) => { second.push(e.seq); }, { onError: (e) => errors.push(String(e)) });
    await b.ready;
    await until(() => second.at(-1) === total, 15_000, "the rest");
    await sleep(200);
    // Resumed right after the acknowledged cursor: nothing acknowledged again, no gap.
    assert.equal(second[0], cursor + 1);
    assert.deepEqual(second, Array.from({ length: total - cursor }, (_, i) => cursor + 1 + i));
    assert.deepEqual(first, Array.from({ length: first.length }, (_, i) => i + 1));
    await until(async () => (await fresh.consumerInfo("projector")).cursor === total, 5_000, `the last ack (${JSON.stringify(await fresh.consumerInfo("projector"))} ${errors})`);
    b.unsubscribe();
    await b.closed;
  } finally {
    await server.kill();
    tmp.remove();
  }
});

test("consumer: a failing handler gets the event again; the last ack is sent on unsubscribe; a takeover stops the first", async () => {
  const server = await startServer();
  try {
    const client = new TidingsClient(server.url, FAST);
    for (let i = 1; i <= 5; i++) await client.publish("job.run", { i });
    const handled = [];
    const errors = [];
    let failed = false;
    const a = client.consumer("worker", "job.>", (e) => {
      handled.push(e.seq);
      if (e.seq === 3 && !failed) {
        failed = true;
        throw new Error("transient");
      }
    }, { onError: (e, fatal) => errors.push([String(e), fatal]) });
    await a.ready;
    await until(() => handled.at(-1) === 5, 10_000, "all five");
    assert.deepEqual(handled, [1, 2, 3, 3, 4, 5]);
    assert.deepEqual(errors[0], ["Error: transient", false]);
    a.unsubscribe();
    await a.closed;
    await until(async () => (await client.consumerInfo("worker")).cursor === 5, 5_000, "the final ack");

    // A second connection with the same name takes over; the first stops.
    const firstErrors = [];
    const one = client.consumer("worker", "job.>", () => {}, { onError: (e, fatal) => firstErrors.push([e, fatal]) });
    await one.ready;
    const two = client.consumer("worker", "job.>", () => {});
    await two.ready;
    await one.closed;
    assert.equal(one.state, "closed");
    const [err, fatal] = firstErrors.at(-1);
    assert.ok(err instanceof TidingsError && err.code === "consumer_taken_over" && fatal, String(err));
    // Other patterns under the same name are refused with the server's 409.
    const other = client.consumer("worker", "other.>", () => {});
    await assert.rejects(other.ready, (e) => e instanceof TidingsError && e.status === 409);
    two.unsubscribe();
    await two.closed;
  } finally {
    await server.kill();
  }
});
