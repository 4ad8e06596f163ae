// The built client in a real page (headless Chromium) served from another
// origin than the server: the restart test again, over both transports.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { TidingsClient } from "../dist/index.js";
import { startServer, restartOn, tempDir, until, publishSurely, launchChromium, sleep } from "./harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(here, "../dist");

const PAGE = `<!doctype html><meta charset="utf-8"><title>client test</title>
<script type="module">
  import { TidingsClient, TidingsError } from "/dist/index.js";
  window.TidingsClient = TidingsClient;
  window.TidingsError = TidingsError;
  window.loaded = true;
</script>`;

/**
 * The built module at `/dist/NAME.js` (the entry imports its siblings), or
 * undefined: only `.js` files inside dist/, nothing outside it.
 */
function distFile(url) {
  let name;
  try {
    name = decodeURIComponent(new URL(url, "http://localhost").pathname);
  } catch {
    return undefined;
  }
  if (!name.startsWith("/dist/") || !name.endsWith(".js") || name.includes("\0")) return undefined;
  const file = path.resolve(dist, "." + name.slice("/dist".length));
  if (!file.startsWith(dist + path.sep)) return undefined;
  try {
    return statSync(file).isFile() ? readFileSync(file) : undefined;
  } catch {
    return undefined;
  }
}

/** A static server for the page and the built client, on its own port. */
function staticServer() {
  const server = http.createServer((req, res) => {
    const js = req.url === "/" ? undefined : distFile(req.url);
    if (req.url === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(PAGE);
    } else if (js) {
      res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(js);
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

test("browser: a server restart mid-stream: every seq once, in order, over ws and sse", async () => {
  // The browser first: if it cannot start, nothing else is left running
  // (a live server or site would keep the test runner from exiting).
  const browser = await launchChromium();
  const site = await staticServer();
  const origin = `http://127.0.0.1:${site.address().port}`;
  const tmp = tempDir();
  const env = { TIDINGS_CORS_ORIGINS: origin };
  let server = await startServer({ dataDir: tmp.dir, env }).catch(async (e) => {
    await browser.close();
    site.close();
    throw e;
  });
  const port = server.port;
  try {
    const page = await browser.newPage();
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    await page.goto(origin + "/");
    await page.waitForFunction(() => window.loaded === true);
    assert.notEqual(new URL(page.url()).origin, new URL(server.url).origin);

    await page.evaluate(async (url) => {
      window.seen = { ws: [], sse: [] };
      window.states = { ws: [], sse: [] };
      const client = new window.TidingsClient(url, { minBackoffMs: 50, maxBackoffMs: 500 });
      window.subs = ["ws", "sse"].map((transport) =>
        client.subscribe("browser.>", (e) => { window.seen[transport].push(e.seq); }, {
          transport, after: 0, onState: (s) => window.states[transport].push(s),
        }));
      await Promise.all(window.subs.map((s) => s.ready));
    }, server.url);

    const client = new TidingsClient(server.url);
    const total = 200;
    for (let i = 1; i <= total; i++) {
      if (i === 80) {
        await server.kill("SIGKILL");
        setTimeout(async () => { server = await restartOn(port, { dataDir: tmp.dir, env }); }, 300);
      }
      await publishSurely(client, `browser.e${i % 4}`, { i }, `b${i}`);
    }
    await until(async () => {
      const n = await page.evaluate(() => Math.min(window.seen.ws.length, window.seen.sse.length));
      return n >= total;
    }, 20_000, "both transports to see every event");
    await sleep(200);
    const { seen, states } = await page.evaluate(() => ({ seen: window.seen, states: window.states }));
    const expected = Array.from({ length: total }, (_, i) => i + 1);
    assert.deepEqual(seen.ws, expected);
    assert.deepEqual(seen.sse, expected);
    assert.ok(states.ws.includes("reconnecting") && states.sse.includes("reconnecting"), JSON.stringify(states));

    // A server error reaches page code as a typed TidingsError.
    const err = await page.evaluate(async (url) => {
      const c = new window.TidingsClient(url);
      try {
        await c.publish("bad..name", {});
        return null;
      } catch (e) {
        return { typed: e instanceof window.TidingsError, status: e.status, code: e.code };
      }
    }, server.url);
    assert.deepEqual(err, { typed: true, status: 400, code: "invalid_name" });
    assert.deepEqual(pageErrors, []);
  } finally {
    await browser.close();
    await server.kill();
    site.close();
    tmp.remove();
  }
});
