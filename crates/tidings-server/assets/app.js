// The Tidings dashboard. Plain modern JavaScript, served as is by the
// server; it talks to the server through the TypeScript client's build.

import { TidingsClient, TidingsError } from "/assets/client/index.js";
import { RateChart } from "/assets/rates.js";

const TOKEN_KEY = "tidings.token";
const STATS_EVERY_MS = 2000;
const CONSUMERS_EVERY_MS = 5000;
const TAIL_MAX = 500;
/** Events of the log's end the tail starts with, so it is never blank. */
const TAIL_BACKLOG = 50;
const PAUSED_MAX = 5000;

const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat();

// ---------------------------------------------------------------- token

const token = () => sessionStorage.getItem(TOKEN_KEY) ?? undefined;
const client = new TidingsClient(location.origin, { token, minBackoffMs: 250, maxBackoffMs: 5000 });
let authOn = false;
let askingToken = null;

/** Opens the token dialog once; resolves when a token was given. */
function askForToken(message) {
  if (askingToken) return askingToken;
  const dialog = $("token-dialog");
  const err = $("token-error");
  err.hidden = !message;
  err.textContent = message ?? "";
  $("token-input").value = "";
  askingToken = new Promise((resolve) => {
    const done = (ok) => {
      dialog.close();
      askingToken = null;
      $("token-form").onsubmit = null;
      $("token-cancel").onclick = null;
      resolve(ok);
    };
    $("token-form").onsubmit = (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
      done(true);
      onTokenChange();
    };
    $("token-cancel").onclick = () => done(false);
  });
  dialog.showModal();
  $("token-input").focus();
  return askingToken;
}

/** Runs `f`; on a 401 asks for a token and tries once more. */
async function authed(f) {
  try {
    return await f();
  } catch (e) {
    if (e instanceof TidingsError && e.status === 401) {
      authOn = true;
      $("token-button").hidden = false;
      const had = token();
      if (await askForToken(had ? "That token was refused: " + e.message : undefined)) return await f();
    }
    throw e;
  }
}

function onTokenChange() {
  refreshStats();
  refreshConsumers();
  startTail();
}

$("token-button").addEventListener("click", () => askForToken());

// ---------------------------------------------------------------- JSON view

/** `value` as indented JSON, highlighted, built from text nodes only. */
function jsonNode(value) {
  const pre = document.createElement("pre");
  const text = JSON.stringify(value, null, 2) ?? "undefined";
  const re = /("(?:[^"\\]|\\.)*")(\s*:)?|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|\b(true|false|null)\b/g;
  let at = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > at) pre.append(text.slice(at, m.index));
    const span = document.createElement("span");
    if (m[1]) {
      span.className = m[2] ? "j-key" : "j-str";
      span.textContent = m[1];
      pre.append(span);
      if (m[2]) pre.append(m[2]);
    } else {
      span.className = m[3] ? "j-num" : "j-lit";
      span.textContent = m[0];
      pre.append(span);
    }
    at = m.index + m[0].length;
  }
  pre.append(text.slice(at));
  return pre;
}

function hue(name) {
  let h = 0;
  for (const c of name.split(/[.:]/)[0]) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return h % 360;
}

function timeOf(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso ?? "";
  const today = new Date().toDateString() === d.toDateString();
  const t = d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  return today ? t : `${d.toLocaleDateString()} ${t}`;
}

/** One event as a row that expands to its JSON. */
function eventRow(ev, fresh) {
  const li = document.createElement("li");
  li.className = fresh ? "ev fresh" : "ev";
  li.dataset.seq = ev.seq;
  const head = document.createElement("button");
  head.type = "button";
  head.className = "ev-head";
  head.setAttribute("aria-expanded", "false");
  const seq = document.createElement("span");
  seq.className = "seq";
  seq.textContent = `#${ev.seq}`;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = ev.name;
  name.style.setProperty("--h", hue(ev.name));
  const preview = document.createElement("span");
  preview.className = "preview";
  const data = JSON.stringify(ev.data);
  preview.textContent = data === undefined ? "" : data.length > 240 ? data.slice(0, 240) + "…" : data;
  const meta = document.createElement("span");
  meta.className = "meta";
  const src = document.createElement("span");
  src.className = "src";
  src.textContent = ev.source;
  const time = document.createElement("time");
  time.dateTime = ev.time;
  time.textContent = timeOf(ev.time);
  time.title = ev.time;
  meta.append(src, time);
  head.append(seq, name, preview, meta);
  li.append(head);
  head.addEventListener("click", () => {
    const open = head.getAttribute("aria-expanded") === "true";
    head.setAttribute("aria-expanded", String(!open));
    if (open) li.querySelector("pre")?.remove();
    else li.append(jsonNode(ev));
  });
  return li;
}

function showError(el, e) {
  if (!e) {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  el.hidden = false;
  el.textContent = e instanceof TidingsError ? `${e.status} ${e.code}: ${e.message}` : String(e?.message ?? e);
}

// ---------------------------------------------------------------- stats

const chart = new RateChart($("chart"), {
  series: [
    { key: "pub", className: "pub" },
    { key: "del", className: "del" },
  ],
});
let previous = null;

function rate(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 100) return fmt.format(Math.round(v));
  return v.toFixed(v < 10 ? 1 : 0);
}

function setPill(el, text, kind) {
  el.textContent = text;
  el.className = `pill ${kind}`;
}

/** The health pill, from /healthz (public: it shows before any token). */
async function refreshHealth() {
  try {
    const res = await fetch("/healthz", { cache: "no-store" });
    const body = await res.json();
    if (body.status === "ok") setPill($("health"), "healthy", "ok");
    else setPill($("health"), `degraded: ${body.reason ?? "the log cannot write"}`, "warn");
    return body;
  } catch {
    setPill($("health"), "unreachable", "err");
    return null;
  }
}

async function refreshStats() {
  refreshHealth();
  let stats;
  try {
    stats = await authed(() => client.request("GET", "/stats"));
  } catch (e) {
    if (!(e instanceof TidingsError)) setPill($("health"), "unreachable", "err");
    previous = null;
    return;
  }
  const now = performance.now();
  if (stats.auth) {
    authOn = true;
    $("token-button").hidden = false;
  }
  $("stat-seq").textContent = fmt.format(stats.last_seq);
  $("stat-published").textContent = `${fmt.format(stats.published)} via this server`;
  $("stat-pub-total").textContent = `events / s · ${fmt.format(stats.last_seq)} in the log`;
  $("stat-del-total").textContent = `events / s · ${fmt.format(stats.delivered.total)} since start`;
  $("stat-conn").textContent = fmt.format(stats.connections.total);
  $("stat-conn-split").textContent = `WebSocket ${fmt.format(stats.connections.ws)} · SSE ${fmt.format(stats.connections.sse)}`;
  const subs = Object.values(stats.channels).reduce((a, b) => a + b, 0);
  $("stat-channels").textContent = fmt.format(stats.total_channels);
  $("stat-subs").textContent = `${fmt.format(subs)} channel subscriber${subs === 1 ? "" : "s"}`;
  if (previous) {
    const dt = (now - previous.at) / 1000;
    const pub = Math.max(0, stats.last_seq - previous.last_seq) / dt;
    const del = Math.max(0, stats.delivered.total - previous.delivered) / dt;
    $("stat-pub-rate").textContent = rate(pub);
    $("stat-del-rate").textContent = rate(del);
    chart.push(Date.now(), { pub, del });
    const span = Math.round((chart.span ?? 300_000) / 60_000);
    $("chart-window").textContent = `last ${span === 1 ? "minute" : `${span} minutes`}`;
  }
  previous = { at: now, last_seq: stats.last_seq, delivered: stats.delivered.total };
  renderChannels(stats.channels);
}

function renderChannels(channels) {
  const box = $("channels");
  const entries = Object.entries(channels).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  if (entries.length === 0) {
    const none = document.createElement("div");
    none.className = "none";
    none.textContent = "No channel sockets open (/ws/events/{channel}).";
    box.replaceChildren(none);
    return;
  }
  const max = Math.max(...entries.map((e) => e[1]));
  box.replaceChildren(
    ...entries.slice(0, 50).map(([name, n]) => {
      const item = document.createElement("div");
      item.className = "item";
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = name;
      title.title = name;
      const num = document.createElement("span");
      num.className = "num";
      num.textContent = fmt.format(n);
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("i");
      fill.style.width = `${Math.max(2, (n / max) * 100)}%`;
      bar.append(fill);
      item.append(title, num, bar);
      return item;
    }),
  );
}

// ---------------------------------------------------------------- consumers

let consumersSupported = true;

async function refreshConsumers() {
  const box = $("consumers");
  const none = (text) => {
    const d = document.createElement("div");
    d.className = "none";
    d.textContent = text;
    box.replaceChildren(d);
  };
  if (!consumersSupported) return;
  let list;
  try {
    list = (await authed(() => client.request("GET", "/consumers"))).consumers ?? [];
  } catch (e) {
    if (e instanceof TidingsError && e.status === 404) {
      consumersSupported = false;
      $("stat-consumers").textContent = "none";
      $("stat-lag").textContent = "not offered by this server";
      none("None: this server has no durable consumers.");
      return;
    }
    none(e instanceof TidingsError ? `${e.status} ${e.code}: ${e.message}` : "Could not load consumers.");
    return;
  }
  $("stat-consumers").textContent = fmt.format(list.length);
  const totalLag = list.reduce((a, c) => a + (c.lag ?? 0), 0);
  $("stat-lag").textContent = list.length ? `${fmt.format(totalLag)} events behind in all` : "none yet";
  if (list.length === 0) {
    none("None yet. Connect one with /ws?consumer=NAME&pattern=…");
    return;
  }
  list.sort((a, b) => (b.lag ?? 0) - (a.lag ?? 0) || a.name.localeCompare(b.name));
  const maxLag = Math.max(1, ...list.map((c) => c.lag ?? 0));
  box.replaceChildren(
    ...list.map((c) => {
      const item = document.createElement("div");
      item.className = "item";
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = c.name;
      const num = document.createElement("span");
      num.className = "num";
      num.textContent = fmt.format(c.lag ?? 0);
      const detail = document.createElement("div");
      detail.className = "detail";
      const dot = document.createElement("span");
      dot.className = c.connected ? "dot on" : "dot";
      const state = document.createElement("span");
      state.textContent = c.connected ? "connected" : "offline";
      const pos = document.createElement("span");
      pos.textContent = `at #${fmt.format(c.cursor ?? 0)} · ${(c.patterns ?? []).join(" ")}`;
      detail.append(dot, state, pos);
      const bar = document.createElement("div");
      bar.className = "bar lag";
      const fill = document.createElement("i");
      fill.style.width = `${((c.lag ?? 0) / maxLag) * 100}%`;
      bar.append(fill);
      item.append(title, num, detail, bar);
      return item;
    }),
  );
}

// ---------------------------------------------------------------- live tail

let tail = null;
let paused = false;
let pending = [];
let droppedWhilePaused = 0;
let tailSeen = 0;

function tailPatterns() {
  const list = $("tail-pattern").value.split(/[\s,]+/).filter(Boolean);
  return list.length ? list : [">"];
}

function updateTailCount() {
  const shown = $("tail-list").children.length;
  $("tail-count").textContent = `${fmt.format(tailSeen)} received${shown < tailSeen ? ` · newest ${fmt.format(shown)} shown` : ""}`;
  $("tail-empty").hidden = shown > 0;
  $("tail-pause").textContent = paused ? `Resume${pending.length ? ` (${fmt.format(pending.length)} new)` : ""}` : "Pause";
  $("tail-pause").classList.toggle("active", paused);
}

function addToTail(events, fresh) {
  const list = $("tail-list");
  const frag = document.createDocumentFragment();
  for (let i = events.length - 1; i >= 0; i--) frag.append(eventRow(events[i], fresh));
  list.prepend(frag);
  while (list.children.length > TAIL_MAX) list.lastElementChild.remove();
}

let tailGeneration = 0;

async function startTail() {
  const generation = ++tailGeneration;
  tail?.unsubscribe();
  tail = null;
  showError($("tail-error"), null);
  $("tail-list").replaceChildren();
  tailSeen = 0;
  pending = [];
  updateTailCount();
  let after;
  try {
    after = Math.max(0, (await client.lastSeq()) - TAIL_BACKLOG);
  } catch {
    after = undefined; // the subscription retries by itself
  }
  if (generation !== tailGeneration) return; // started again meanwhile
  const filter = $("tail-filter").value.trim() || undefined;
  const patterns = tailPatterns();
  const state = $("tail-state");
  const sub = client.subscribe(patterns, (ev) => {
    tailSeen++;
    if (paused) {
      pending.push(ev);
      if (pending.length > PAUSED_MAX) {
        pending.shift();
        droppedWhilePaused++;
      }
    } else {
      addToTail([ev], true);
    }
    updateTailCount();
  }, {
    after,
    filter,
    transport: "ws",
    onState: (s) => {
      if (tail !== sub) return;
      const kind = s === "open" ? "ok" : s === "closed" ? "err" : "warn";
      setPill(state, s === "open" ? "live" : s, kind);
    },
    onLag: ({ missed, resumeFrom }) => {
      const note = document.createElement("li");
      note.className = "notice";
      note.textContent = `${fmt.format(missed)} event(s) were pruned by retention before they could be shown; resuming at #${resumeFrom}.`;
      $("tail-list").prepend(note);
    },
  });
  tail = sub;
  sub.ready.catch(async (e) => {
    if (tail !== sub) return;
    if (e instanceof TidingsError && e.status === 401) {
      authOn = true;
      $("token-button").hidden = false;
      setPill($("tail-state"), "needs a token", "warn");
      await askForToken(token() ? "That token was refused: " + e.message : undefined);
      return;
    }
    showError($("tail-error"), e);
  });
}

$("tail-form").addEventListener("submit", (e) => {
  e.preventDefault();
  startTail();
});
$("tail-pause").addEventListener("click", () => {
  paused = !paused;
  if (!paused && pending.length) {
    if (droppedWhilePaused) {
      const note = document.createElement("li");
      note.className = "notice";
      note.textContent = `${fmt.format(droppedWhilePaused)} older event(s) received while paused are not shown (see History).`;
      $("tail-list").prepend(note);
      droppedWhilePaused = 0;
    }
    addToTail(pending.slice(-TAIL_MAX), false);
    pending = [];
  }
  updateTailCount();
});
$("tail-clear").addEventListener("click", () => {
  $("tail-list").replaceChildren();
  tailSeen = 0;
  pending = [];
  updateTailCount();
});

// ---------------------------------------------------------------- publish

$("publish-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const result = $("pub-result");
  const raw = $("pub-data").value.trim();
  let data = null;
  if (raw) {
    try {
      data = JSON.parse(raw);
    } catch (err) {
      result.className = "result err";
      result.textContent = `Data is not JSON: ${err.message}`;
      return;
    }
  }
  const options = {};
  const source = $("pub-source").value.trim();
  const key = $("pub-key").value.trim();
  if (source) options.source = source;
  if (key) options.key = key;
  try {
    const ev = await authed(() => client.publish($("pub-name").value.trim(), data, options));
    result.className = "result ok";
    result.textContent = ev.duplicate ? `Already published as #${ev.seq} (same key)` : `Committed as #${ev.seq}`;
  } catch (err) {
    result.className = "result err";
    result.textContent = err instanceof TidingsError ? `${err.status} ${err.code}: ${err.message}` : String(err.message ?? err);
  }
});

$("pub-data").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    $("publish-form").requestSubmit();
  }
});

// ---------------------------------------------------------------- history

let histStack = []; // `after` of the pages before the current one
let histAfter = 0;
let histNext = null;

async function loadHistory(after) {
  const pattern = $("hist-pattern").value.trim() || ">";
  const filter = $("hist-filter").value.trim() || undefined;
  const limit = Math.min(1000, Math.max(1, Number($("hist-limit").value) || 25));
  showError($("hist-error"), null);
  let page;
  try {
    page = await authed(() => client.historyPage(pattern, { after, limit, filter }));
  } catch (e) {
    showError($("hist-error"), e);
    return;
  }
  histAfter = after;
  histNext = page.next_after < page.last_seq && page.next_after > after ? page.next_after : null;
  const list = $("hist-list");
  list.replaceChildren(...page.events.map((ev) => eventRow(ev, false)));
  if (page.events.length === 0) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "No events here.";
    list.append(li);
  }
  const first = page.events[0]?.seq;
  const last = page.events[page.events.length - 1]?.seq;
  $("hist-page").textContent = first ? `#${fmt.format(first)} – #${fmt.format(last)}` : "";
  $("hist-info").textContent = `log at #${fmt.format(page.last_seq)}`;
  $("hist-prev").disabled = histStack.length === 0;
  $("hist-next").disabled = histNext === null;
}

$("hist-form").addEventListener("submit", (e) => {
  e.preventDefault();
  histStack = [];
  loadHistory(Math.max(0, Number($("hist-after").value) || 0));
});
$("hist-next").addEventListener("click", () => {
  if (histNext === null) return;
  histStack.push(histAfter);
  loadHistory(histNext);
});
$("hist-prev").addEventListener("click", () => {
  if (!histStack.length) return;
  loadHistory(histStack.pop());
});
$("hist-latest").addEventListener("click", async () => {
  // The newest page: for the catch-all pattern this is exact; for others
  // it shows the matching events among the newest `limit` seqs.
  const limit = Math.max(1, Number($("hist-limit").value) || 25);
  const last = previous?.last_seq ?? 0;
  const after = Math.max(0, last - limit);
  histStack = after > 0 ? [Math.max(0, after - limit)] : [];
  $("hist-after").value = String(after);
  loadHistory(after);
});

// ---------------------------------------------------------------- start

$("server").textContent = location.host;
updateTailCount();
startTail();
refreshStats().then(() => loadHistory(0));
refreshConsumers();
setInterval(refreshStats, STATS_EVERY_MS);
setInterval(refreshConsumers, CONSUMERS_EVERY_MS);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refreshStats();
});
