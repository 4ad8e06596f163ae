// The dashboard served by the server, in headless Chromium: an event
// published over HTTP shows up in the live tail within a second, the page
// logs no errors, and screenshots (light and dark) are saved for people to
// look at.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { TidingsClient } from "../dist/index.js";
import { startServer, tempDir, launchChromium, closing, sleep } from "./harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const SHOTS = path.resolve(process.env.DASHBOARD_SHOTS ?? path.join(here, "../../../target"));

async function openDashboard(browser, url, scheme) {
  const page = await browser.newPage();
  await page.setViewport({ width: 1440, height: 1100, deviceScaleFactor: 1 });
  await page.emulateMediaFeatures([{ name: "prefers-color-scheme", value: scheme }]);
  const problems = [];
  page.on("console", (m) => {
    if (m.type() !== "error" && m.type() !== "warning") return;
    const where = m.location()?.url ?? "";
    // A server without durable consumers answers GET /consumers with 404,
    // which the page shows as "none"; the browser still logs the 404.
    if (/Failed to load resource/.test(m.text()) && /\/consumers$/.test(where)) return;
    problems.push(`${m.type()}: ${m.text()} ${where}`);
  });
  page.on("pageerror", (e) => problems.push(`pageerror: ${e}`));
  page.on("requestfailed", (r) => problems.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
  await page.goto(url + "/", { waitUntil: "load" });
  await page.waitForFunction(() => document.getElementById("tail-state")?.textContent === "live", { timeout: 10_000 });
  return { page, problems };
}

/** Some traffic, so the screenshot shows what the page is for. */
async function demoTraffic(client, server) {
  const { default: WebSocket } = await import("ws");
  const sockets = [];
  for (const ch of ["orders", "orders", "orders", "player.move", "trivia"]) {
    const ws = new WebSocket(`${server.url.replace("http", "ws")}/ws/events/${ch}`);
    await new Promise((r) => ws.once("message", r));
    sockets.push(ws);
  }
  const names = ["orders.placed", "orders.paid", "player.move", "trivia.started", "orders.shipped"];
  for (let round = 0; round < 6; round++) {
    const n = 3 + round * 2;
    await client.publishBatch(Array.from({ length: n }, (_, i) => ({
      name: names[(round + i) % names.length],
      data: { id: 1000 + round * 10 + i, total: Math.round(Math.random() * 20000) / 100, region: ["eu", "us", "apac"][i % 3] },
      source: i % 2 ? "checkout" : "game",
    })));
    await sleep(1000);
  }
  return sockets;
}

test("dashboard: live tail within a second, no console errors, screenshots", async () => {
  const browser = await launchChromium();
  const server = await startServer().catch(closing(browser));
  const client = new TidingsClient(server.url);
  let sockets = [];
  let ticker;
  const consumers = [];
  try {
    mkdirSync(SHOTS, { recursive: true });
    const { page, problems } = await openDashboard(browser, server.url, "light");

    // Published over HTTP -> in the tail within a second.
    const t0 = Date.now();
    const ev = await client.publish("dashboard.check", { hello: "world" }, { source: "test" });
    await page.waitForSelector(`#tail-list li[data-seq="${ev.seq}"]`, { timeout: 1000 });
    const took = Date.now() - t0;
    assert.ok(took < 1000, `took ${took} ms`);

    // The publish form.
    await page.type("#pub-name", "dashboard.form");
    await page.type("#pub-data", '{"from": "the form"}');
    await page.click("#publish-form button[type=submit]");
    await page.waitForFunction(() => /Committed as #\d+/.test(document.getElementById("pub-result").textContent), { timeout: 3000 });

    sockets = await demoTraffic(client, server);
    // A steady trickle while the screenshots are taken, so the rates show.
    ticker = setInterval(() => {
      client.publish("sensor.reading", { celsius: +(20 + Math.random() * 5).toFixed(1), room: "lab" }, { source: "sensor-7" }).catch(() => {});
    }, 150);
    // With durable consumers on the server: one that keeps up, one that lags.
    const hasConsumers = (await fetch(`${server.url}/consumers`)).status !== 404;
    if (hasConsumers) {
      consumers.push(client.consumer("projector", "orders.>", () => {}, { after: 0 }));
      consumers.push(client.consumer("mailer", ">", () => sleep(400), { after: 0 }));
      await Promise.all(consumers.map((c) => c.ready));
      await page.waitForFunction(() => /mailer/.test(document.getElementById("consumers").textContent), { timeout: 8000 });
    }
    await sleep(2500); // a stats poll or two
    // Expand the newest event's JSON.
    await page.click("#tail-list li.ev .ev-head");
    await page.waitForSelector("#tail-list li.ev pre");
    // History has pages.
    await page.click("#hist-form button[type=submit]");
    await page.waitForSelector("#hist-list li.ev");
    const histRows = await page.$$eval("#hist-list li.ev", (l) => l.map((li) => Number(li.dataset.seq)));
    assert.deepEqual(histRows, Array.from({ length: 25 }, (_, i) => i + 1));
    await page.click("#hist-next");
    await page.waitForSelector('#hist-list li.ev[data-seq="26"]');
    await page.click("#hist-prev");
    await page.waitForSelector('#hist-list li.ev[data-seq="1"]');
    const consumersText = await page.$eval("#consumers", (e) => e.textContent);
    assert.match(consumersText, /\S/);
    const channels = await page.$eval("#channels", (e) => e.textContent);
    assert.match(channels, /orders/);
    assert.notEqual(await page.$eval("#stat-conn", (e) => e.textContent), "–");

    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: path.join(SHOTS, "dashboard.png"), fullPage: true });

    const dark = await openDashboard(browser, server.url, "dark");
    await client.publish("orders.refunded", { id: 1003, total: 12.5, reason: "damaged" }, { source: "support" });
    await sleep(4500);
    await dark.page.click("#tail-list li.ev .ev-head");
    await dark.page.evaluate(() => window.scrollTo(0, 0));
    await dark.page.screenshot({ path: path.join(SHOTS, "dashboard-dark.png"), fullPage: true });

    await page.setViewport({ width: 420, height: 900, deviceScaleFactor: 1 });
    await sleep(300);
    await page.screenshot({ path: path.join(SHOTS, "dashboard-narrow.png"), fullPage: false });

    assert.deepEqual(problems, [], "the page logged problems");
    assert.deepEqual(dark.problems, [], "the dark page logged problems");
  } finally {
    clearInterval(ticker);
    for (const c of consumers) c.unsubscribe();
    for (const s of sockets) s.close();
    await browser.close();
    await server.kill();
  }
});

test("dashboard: asks for a token when auth is on, keeps it for the session", async () => {
  const tmp = tempDir();
  const cfg = path.join(tmp.dir, "tidings.toml");
  writeFileSync(cfg, `[[auth.tokens]]\ntoken = "dash-token"\npublish = [">"]\nsubscribe = [">"]\n`);
  const browser = await launchChromium();
  const server = await startServer({ args: ["--config", cfg] }).catch(closing(browser));
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(server.url + "/");
    await page.waitForSelector("#token-dialog[open]", { timeout: 5000 });
    await page.screenshot({ path: path.join(SHOTS, "dashboard-token.png") });
    await page.type("#token-input", "dash-token");
    await page.click("#token-form button[type=submit]");
    await page.waitForFunction(() => document.getElementById("tail-state")?.textContent === "live", { timeout: 10_000 });
    const client = new TidingsClient(server.url, { token: "dash-token" });
    const ev = await client.publish("secure.hello", { ok: true });
    await page.waitForSelector(`#tail-list li[data-seq="${ev.seq}"]`, { timeout: 1000 });
    assert.equal(await page.evaluate(() => sessionStorage.getItem("tidings.token")), "dash-token");
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.kill();
    tmp.remove();
  }
});

test("dashboard: the tail filter applies, and a bad one shows the server's error", async () => {
  const browser = await launchChromium();
  const server = await startServer().catch(closing(browser));
  try {
    const client = new TidingsClient(server.url);
    const page = await browser.newPage();
    await page.goto(server.url + "/");
    await page.waitForFunction(() => document.getElementById("tail-state")?.textContent === "live", { timeout: 10_000 });
    await page.type("#tail-filter", "data.x ==");
    await page.click("#tail-form button[type=submit]");
    await page.waitForSelector("#tail-error:not([hidden])", { timeout: 5000 });
    assert.match(await page.$eval("#tail-error", (e) => e.textContent), /^400 /);

    await page.$eval("#tail-filter", (e) => { e.value = ""; });
    await page.type("#tail-filter", "data.x > 10");
    await page.click("#tail-form button[type=submit]");
    await page.waitForFunction(() => document.getElementById("tail-state")?.textContent === "live", { timeout: 10_000 });
    assert.equal(await page.$eval("#tail-error", (e) => e.hidden), true);
    const low = await client.publish("f.x", { x: 1 });
    const high = await client.publish("f.x", { x: 11 });
    await page.waitForSelector(`#tail-list li[data-seq="${high.seq}"]`, { timeout: 2000 });
    assert.equal(await page.$(`#tail-list li[data-seq="${low.seq}"]`), null);
  } finally {
    await browser.close();
    await server.kill();
  }
});
