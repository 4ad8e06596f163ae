// A small hand-drawn SVG chart of two rates over a sliding time window.

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

/** A round grid step (1, 2 or 5 times a power of ten) for about `v`. */
function niceStep(v) {
  if (v <= 0) return 0.25;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function short(v) {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return `${+v.toFixed(v % 1 ? 2 : 0)}`;
}

export class RateChart {
  /** `series`: [{ key, className }]. */
  constructor(container, { windowMs = 5 * 60_000, series }) {
    this.container = container;
    this.windowMs = windowMs;
    this.series = series;
    this.samples = []; // { t, values: { key: number } }
    this.svg = el("svg", { "aria-hidden": "true" }, container);
    new ResizeObserver(() => this.draw()).observe(container);
  }

  push(t, values) {
    this.samples.push({ t, values });
    const cutoff = t - this.windowMs - 10_000;
    while (this.samples.length > 2 && this.samples[0].t < cutoff) this.samples.shift();
    this.draw();
  }

  draw() {
    const w = this.container.clientWidth;
    const h = this.container.clientHeight;
    if (!w || !h) return;
    const svg = this.svg;
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    const left = 44, right = 10, top = 8, bottom = 20;
    const pw = w - left - right, ph = h - top - bottom;
    const now = this.samples.length ? this.samples[this.samples.length - 1].t : Date.now();
    // The window grows from one minute to `windowMs` as samples arrive.
    const first = this.samples.length ? this.samples[0].t : now;
    const span = Math.min(this.windowMs, Math.max(60_000, Math.ceil((now - first) / 60_000) * 60_000));
    this.span = span;
    const t0 = now - span;
    let max = 0;
    for (const s of this.samples) for (const k of this.series) max = Math.max(max, s.values[k.key] ?? 0);
    const step = Math.max(0.25, niceStep((max * 1.1) / 4));
    const yMax = 4 * step;
    const x = (t) => left + ((t - t0) / span) * pw;
    const y = (v) => top + ph - (v / yMax) * ph;

    for (let i = 0; i <= 4; i++) {
      const v = (yMax * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      el("line", { x1: left, x2: w - right, y1: yy, y2: yy, class: "grid-line" }, svg);
      const label = el("text", { x: left - 8, y: yy + 4, "text-anchor": "end", class: "axis-label" }, svg);
      label.textContent = short(v);
    }
    // Time labels: every 10 s within a minute, else every minute.
    const tick = span <= 60_000 ? 10_000 : 60_000;
    const ticks = Math.round(span / tick);
    for (let i = ticks; i >= 0; i--) {
      const xx = x(now - i * tick);
      const anchor = i === ticks ? "start" : i === 0 ? "end" : "middle";
      const label = el("text", { x: xx, y: h - 4, "text-anchor": anchor, class: "axis-label" }, svg);
      label.textContent = i === 0 ? "now" : tick === 60_000 ? `−${i}m` : `−${i * 10}s`;
    }
    const visible = this.samples.filter((s) => s.t >= t0 - 5_000);
    if (visible.length < 2) return;
    for (const k of this.series) {
      const pts = visible.map((s) => [Math.max(left, x(s.t)), y(s.values[k.key] ?? 0)]);
      const line = pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ");
      const base = y(0);
      el("path", {
        d: `M${pts[0][0].toFixed(1)},${base} L${line.replaceAll(" ", " L")} L${pts[pts.length - 1][0].toFixed(1)},${base} Z`,
        class: `area ${k.className}`,
      }, svg);
      el("polyline", { points: line, class: `line ${k.className}` }, svg);
      const [lx, ly] = pts[pts.length - 1];
      el("circle", { cx: lx, cy: ly, r: 3, class: `now-dot ${k.className}` }, svg);
    }
  }
}
