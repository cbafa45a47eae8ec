// Continuity: the last scheduled scan (continuity_scans: every stream x window, as the stack
// scanned it), completeness of every stream over each window scanned now (the scheduled scan's
// CONTINUITY_WINDOWS_DAYS, ending now, and the whole stored span), and the gap segments with
// their states.
import { api, qs } from "../api.js";
import { badge, empty, h, isoTime, mount, num, panel, pct, table } from "../ui.js";

const DAY = 86_400_000;

// streams scanned at once (each: its windows and its gap segments, in parallel); the panels
// are added in the streams' order
const CONCURRENT_STREAMS = 4;

async function scanStream(s, windows, now) {
  return Promise.all(windows.map(async (w) => {
    const params = { symbol: s.symbol, interval: s.interval, limit: 200 };
    if (w !== "all") params.from = now - w * DAY;
    return { window: w === "all" ? "stored span" : `${w}d`, r: await api(`/api/ohlcv/continuity${qs(params)}`) };
  }));
}

async function streamRow(s, windows, now) {
  const [scans, gaps] = await Promise.all([
    scanStream(s, windows, now),
    api(`/api/ohlcv/gaps/status${qs({ symbol: s.symbol, interval: s.interval })}`),
  ]);
  return { s, scans, gaps };
}

function streamPanel({ s, scans, gaps }) {
  const all = scans[scans.length - 1].r;
  return panel(`${s.symbol} ${s.interval}`,
    h("div", { class: "kpis" },
      h("div", { class: "kpi" }, h("b", {}, pct(all.completeness_ratio, 3)), h("span", {}, "stored span complete")),
      h("div", { class: "kpi" }, h("b", {}, num(all.missing_bars, 0)), h("span", {}, "missing bars")),
      h("div", { class: "kpi" }, h("b", {}, num(gaps.open_segments, 0)), h("span", {}, "segments not repaired"))),
    h("p", { class: "muted" }, `stored ${isoTime(all.first_open_time)} → ${isoTime(all.last_open_time)}`),
    gaps.segments.length
      ? table([
        ["from", (g) => isoTime(g.from_open_time)], ["to", (g) => isoTime(g.to_open_time)],
        ["bars", (g) => num(g.missing_bars, 0)], ["state", (g) => badge(g.state)], ["attempts", (g) => g.attempts],
        ["last error", (g) => g.last_error || "–"],
      ], [...gaps.segments].reverse(), { "data-stream": `${s.symbol}:${s.interval}` })
      : empty("no gap segments"));
}

async function start(root) {
  const meta = await api("/api/ohlcv/streams");
  const windows = [...meta.continuity_windows.filter((w) => w !== "all"), "all"];
  const now = Date.now();
  const summary = h("div", { id: "continuity-summary" }, empty("scanning…"));
  const last = h("div", { id: "continuity-last" }, empty("loading…"));
  const detail = h("div", { class: "grid", id: "continuity-streams" });
  mount(root,
    h("h1", {}, "Continuity"),
    h("p", { class: "muted" }, `Scanned ${isoTime(now)} (windows end now; the scheduled scan runs every `
      + `${num(meta.continuity_scan_interval_s, 0)} s over the same windows).`),
    h("div", { class: "panel wide" }, h("h2", {}, "Last scheduled scan"), last),
    h("div", { class: "panel wide" }, h("h2", {}, "Completeness now"), summary),
    detail);
  const stored = await api("/api/ohlcv/continuity/scans");
  mount(last, stored.scans.length
    ? h("div", {},
      h("p", { class: "muted", id: "last-scan-at" }, `newest ${isoTime(stored.scanned_at)}`),
      table([
        ["stream", (x) => `${x.symbol} ${x.interval}`], ["window", (x) => x.window],
        ["complete", (x) => pct(x.completeness, 3)], ["holes", (x) => num(x.gap_count, 0)],
        ["missing bars", (x) => num(x.missing_bars, 0)], ["largest", (x) => num(x.largest_gap_bars, 0)],
        ["span", (x) => (x.span_from === null ? "nothing expected" : `${isoTime(x.span_from)} → ${isoTime(x.span_to)}`)],
        ["scanned", (x) => isoTime(x.scanned_at)],
      ], stored.scans, { id: "last-scans" }))
    : empty("no scheduled scan stored yet (the stack scans every CONTINUITY_SCAN_INTERVAL_S)"));
  const rows = [];
  for (let i = 0; i < meta.streams.length; i += CONCURRENT_STREAMS) {
    const batch = meta.streams.slice(i, i + CONCURRENT_STREAMS).map((s) => streamRow(s, windows, now));
    for (const row of await Promise.all(batch)) {
      rows.push(row);
      detail.append(streamPanel(row));
    }
  }
  mount(summary, table([
    ["stream", (x) => `${x.s.symbol} ${x.s.interval}`],
    ...windows.map((w, i) => [w === "all" ? "stored span" : `${w}d`, (x) => {
      const r = x.scans[i].r;
      return h("span", { title: `${num(r.present_bars, 0)} of ${num(r.expected_bars, 0)} bars, ${r.gap_count} holes` },
        pct(r.completeness_ratio, 3));
    }]),
    ["holes (span)", (x) => num(x.scans[x.scans.length - 1].r.gap_count, 0)],
    ["largest hole", (x) => `${num(x.scans[x.scans.length - 1].r.largest_gap_bars, 0)} bars`],
    ["open segments", (x) => num(x.gaps.open_segments, 0)],
  ], rows, { id: "completeness" }));
  return { rows: () => rows };
}

export default { start };
