// DOM helpers, number and time formats, toasts, tables, sparklines: no framework.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "html") el.innerHTML = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function svgEl(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

export const isoTime = (ms) => (ms === null || ms === undefined ? "–" : new Date(ms).toISOString().replace(".000Z", "Z").replace("T", " "));

export function num(v, digits = 2) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export const pct = (v, digits = 2) => (v === null || v === undefined ? "–" : `${num(100 * v, digits)} %`);

export function badge(state) {
  const s = String(state ?? "unknown");
  return h("span", { class: `badge st-${s.replace(/[^a-z_]/gi, "_")}` }, s);
}

export function kpi(label, value, attrs = {}) {
  return h("div", { class: "kpi", ...attrs }, h("b", {}, value), h("span", {}, label));
}

export function panel(title, ...body) {
  return h("section", { class: "panel", "aria-label": title }, h("h2", {}, title), ...body);
}

/** A table; columns are [header, row => cell] pairs. */
export function table(columns, rows, attrs = {}) {
  const head = h("tr", {}, columns.map(([name]) => h("th", { scope: "col" }, name)));
  const body = rows.map((r) => h("tr", {}, columns.map(([, get]) => h("td", {}, get(r)))));
  return h("div", { class: "scroll" }, h("table", attrs, h("thead", {}, head), h("tbody", {}, body)));
}

export function empty(text) {
  return h("p", { class: "muted" }, text);
}

export function toast(message, { kind = "error", requestId = null, ttl = 8000 } = {}) {
  const box = document.getElementById("toasts");
  const t = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message,
    requestId ? h("div", {}, h("code", {}, `request ${requestId}`)) : null);
  box.append(t);
  setTimeout(() => t.remove(), ttl);
  return t;
}

/** An inline SVG sparkline of numbers (nulls skipped). */
export function sparkline(values, { width = 120, height = 28, label = "trend" } = {}) {
  const vs = values.map((v) => (v === null || v === undefined ? null : Number(v)));
  const present = vs.filter((v) => v !== null);
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  if (present.length < 2) return svg;
  const lo = Math.min(...present), hi = Math.max(...present), span = hi - lo || 1;
  const step = width / (vs.length - 1);
  const pts = vs.map((v, i) => (v === null ? null : `${(i * step).toFixed(1)},${(height - 2 - ((v - lo) / span) * (height - 4)).toFixed(1)}`))
    .filter(Boolean).join(" ");
  svg.append(svgEl("polyline", { points: pts, fill: "none", stroke: "#6cb6ff", "stroke-width": 1.5 }));
  return svg;
}

/** Replace a container's content. */
export function mount(container, ...nodes) {
  container.replaceChildren(...nodes.flat().filter(Boolean));
}
