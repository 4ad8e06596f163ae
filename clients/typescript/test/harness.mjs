// Starts and stops real `tidings` servers for the tests.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.TIDINGS_BIN
  ? path.resolve(process.env.TIDINGS_BIN)
  : path.resolve(here, "../../../target/debug/tidings");

export function tempDir() {
  const dir = mkdtempSync(path.join(tmpdir(), "tidings-client-test-"));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * `tidings serve`; resolves once it prints its URL (the last word of its
 * first stdout line). `store`: { dataDir } or "memory".
 */
export function startServer({ dataDir, listen = "127.0.0.1:0", env = {}, args = [] } = {}) {
  const storeArgs = dataDir ? ["--data-dir", dataDir] : ["--store", "memory:"];
  const child = spawn(BIN, ["serve", "--listen", listen, ...storeArgs, ...args], {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
    if (process.env.TIDINGS_TEST_VERBOSE) process.stderr.write(d);
  });
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`tidings did not start in 20 s: ${stderr}`)), 20_000);
    let found = false;
    child.stdout.on("data", (d) => {
      out += d;
      if (found) return;
      // The URL is the last word of the "listening on" line (the first
      // line unless logs at info level go to stdout before it).
      const line = out.split("\n").slice(0, -1).find((l) => /listening on https?:\/\/\S+\s*$/.test(l));
      if (line) {
        found = true;
        clearTimeout(timer);
        const url = line.trim().split(/\s+/).pop();
        const port = Number(new URL(url).port);
        resolve({
          url,
          port,
          child,
          exited,
          stderr: () => stderr,
          async kill(signal = "SIGTERM") {
            if (child.exitCode === null && child.signalCode === null) child.kill(signal);
            return exited;
          },
        });
      }
    });
    child.on("error", (e) => { clearTimeout(timer); reject(e); });
    exited.then(({ code, signal }) => { clearTimeout(timer); reject(new Error(`tidings exited (${code ?? signal}) before printing its URL: ${stderr}`)); });
  });
}

/** Starts a server on `port`, retrying while the port is still held. */
export async function restartOn(port, opts) {
  for (let i = 0; ; i++) {
    try {
      return await startServer({ ...opts, listen: `127.0.0.1:${port}` });
    } catch (e) {
      if (i > 50) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond()` is true, or fails after `ms`. */
export async function until(cond, ms = 15_000, what = "condition") {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Publishes with a key, retrying until the server answers (it may be down). */
export async function publishSurely(client, name, data, key) {
  for (;;) {
    try {
      return await client.publish(name, data, { key });
    } catch (e) {
      if (e && e.status && e.status < 500) throw e;
      await sleep(50);
    }
  }
}

/**
 * A handler for a failed start after the browser is up: closes the browser,
 * then rethrows (an open browser would keep the test runner from exiting).
 */
export function closing(browser) {
  return async (e) => {
    await browser.close();
    throw e;
  };
}

/**
 * Headless Chromium (puppeteer-core), with a fresh profile. Its first start
 * on a machine can be slow (seen: 9 s idle, over 30 s under load), so it
 * gets 120 s and a second try.
 */
export async function launchChromium() {
  try {
    return await launchChromiumOnce();
  } catch (e) {
    console.error(`chromium did not start (${e.message}); trying once more`);
    return await launchChromiumOnce();
  }
}

async function launchChromiumOnce() {
  const { default: puppeteer } = await import("puppeteer-core");
  const profile = tempDir();
  const launched = puppeteer.launch({
    timeout: 120_000,
    executablePath: process.env.CHROMIUM_BIN ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${profile.dir}`,
    ],
  });
  const browser = await launched.catch((e) => {
    profile.remove();
    throw e;
  });
  const close = browser.close.bind(browser);
  browser.close = async () => {
    await close();
    profile.remove();
  };
  return browser;
}
