// Candles: a stream picker over every served stream, the live chart fed by /ws/ohlcv (snapshot,
// partial updates moving the last bar, appends, repairs redrawing a bar), the gap segments
// overlaid (open, repaired, exchange gap in their own colours), the connection and its lag.
import { CandlestickSeries, HistogramSeries, createChart } from "lightweight-charts";
import { api, qs } from "../api.js";
import { CandleSocket } from "../ws.js";
import { h, isoTime, mount, num, toast } from "../ui.js";

export const GAP_COLOURS = {
  open: "rgba(248, 81, 73, 0.45)", repairing: "rgba(210, 153, 34, 0.45)", failed: "rgba(248, 81, 73, 0.65)",
  repaired: "rgba(63, 185, 80, 0.30)", exchange_gap: "rgba(139, 152, 165, 0.40)",
};
const UNIT = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
export const intervalMs = (iv) => Number(iv.slice(0, -1)) * (UNIT[iv.slice(-1)] || 60_000);
const MAX_BAND_POINTS = 20_000; // a longer hole is drawn over its first bars only

export function chartOptions(height) {
  return {
    height,
    layout: { background: { color: "#182029" }, textColor: "#a9b6c2" },
    grid: { vertLines: { color: "#223040" }, horzLines: { color: "#223040" } },
    timeScale: { timeVisible: true, secondsVisible: false, borderColor: "#2c3945" },
    rightPriceScale: { borderColor: "#2c3945" },
    autoSize: true,
  };
}

const toBar = (c) => ({ time: c.open_time / 1000, open: c.open, high: c.high, low: c.low, close: c.close });

async function start(root, { params, setConnection }) {
  const { streams } = await api("/api/ohlcv/streams");
  const [symbol = streams[0].symbol, interval = streams[0].interval] = params;
  const picker = h("select", { id: "stream", "aria-label": "Stream" },
    streams.map((s) => h("option", { value: `${s.symbol}/${s.interval}`, selected: s.symbol === symbol && s.interval === interval },
      `${s.symbol} ${s.interval}${s.resampled ? " (resampled)" : ""}`)));
  picker.addEventListener("change", () => { location.hash = `#/candles/${picker.value}`; });
  const status = h("span", { class: "muted", id: "chart-status" }, "loading…");
  const chartBox = h("div", { class: "chart", id: "candle-chart", role: "img", "aria-label": `${symbol} ${interval} candles` });
  const legend = h("div", { class: "legend" },
    Object.entries({ open: "open gap", repaired: "repaired", exchange_gap: "exchange gap", repairing: "repairing" })
      .map(([k, label]) => h("span", {}, h("i", { style: `background:${GAP_COLOURS[k]}` }), label)));
  const gapList = h("div", { id: "gap-list" });
  mount(root,
    h("h1", {}, "Candles"),
    h("div", { class: "panel wide" },
      h("div", { class: "row" }, h("label", { for: "stream" }, "Stream"), picker, status), chartBox, legend),
    h("div", { class: "panel wide" }, h("h2", {}, "Gap segments"), gapList));

  const chart = createChart(chartBox, chartOptions(440));
  const gapSeries = chart.addSeries(HistogramSeries, {
    priceScaleId: "gaps", lastValueVisible: false, priceLineVisible: false, base: 0,
  });
  chart.priceScale("gaps").applyOptions({ scaleMargins: { top: 0, bottom: 0 }, visible: false });
  const series = chart.addSeries(CandlestickSeries, {
    upColor: "#3fb950", downColor: "#f85149", wickUpColor: "#3fb950", wickDownColor: "#f85149", borderVisible: false,
  });
  const step = intervalMs(interval);
  const bars = new Map(); // open time (s) -> bar
  const segments = new Map(); // segment id -> {from, to, state}
  let lastTime = -Infinity;
  let lastEvent = null;
  const counts = {}; // events applied, by type
  const gapLog = []; // gap state changes seen live: {id, state, at}

  const redrawAll = () => {
    const all = [...bars.values()].sort((a, b) => a.time - b.time);
    series.setData(all);
    lastTime = all.length ? all[all.length - 1].time : -Infinity;
  };
  const put = (c) => {
    const b = toBar(c);
    const had = bars.has(b.time);
    bars.set(b.time, b);
    if (b.time >= lastTime) {
      series.update(b);
      lastTime = b.time;
    } else if (had) series.update(b, true); // a repair redraws its bar in place
    else redrawAll(); // a late bar slots in behind the newest
  };
  const drawGaps = () => {
    const pts = [];
    const first = bars.size ? Math.min(...bars.keys()) * 1000 : -Infinity;
    for (const s of segments.values()) {
      if (s.to < first) continue; // before the loaded candles: in the table, not on the chart
      for (let t = s.from, n = 0; t <= s.to && n < MAX_BAND_POINTS; t += step, n++) {
        pts.push({ time: t / 1000, value: 1, color: GAP_COLOURS[s.state] || GAP_COLOURS.open });
      }
    }
    pts.sort((a, b) => a.time - b.time);
    const dedup = pts.filter((p, i) => i === 0 || p.time !== pts[i - 1].time);
    gapSeries.setData(dedup);
    mount(gapList, renderGapTable());
  };
  const renderGapTable = () => {
    const rows = [...segments.entries()].sort((a, b) => b[0] - a[0]);
    if (!rows.length) return h("p", { class: "muted" }, "No gap segments for this stream.");
    return h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ["segment", "from", "to", "bars", "state"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map(([id, s]) => h("tr", { "data-segment": id, "data-state": s.state },
        h("td", {}, String(id)), h("td", {}, isoTime(s.from)), h("td", {}, isoTime(s.to)),
        h("td", {}, String(s.missing ?? Math.round((s.to - s.from) / step) + 1)), h("td", {}, s.state))))));
  };
  const loadGaps = async () => {
    const st = await api(`/api/ohlcv/gaps/status${qs({ symbol, interval })}`);
    for (const s of st.segments) {
      segments.set(s.segment_id, { from: s.segment_id, to: s.segment_end, state: s.state, missing: s.missing_bars });
    }
    drawGaps();
  };

  const socket = new CandleSocket({
    symbol, interval,
    onSnapshot: (snap) => {
      counts.snapshot = (counts.snapshot || 0) + 1;
      bars.clear();
      for (const c of snap.candles) bars.set(c.open_time / 1000, toBar(c));
      redrawAll();
      chart.timeScale().scrollToRealTime();
      loadGaps().catch(() => {});
    },
    onEvent: (e) => {
      lastEvent = e;
      counts[e.type] = (counts[e.type] || 0) + 1;
      switch (e.type) {
        case "partial_update": case "partial_close": case "repair": put(e.candle); break;
        case "append": for (const c of e.candles) put(c); break;
        case "gap_detected":
          segments.set(e.segment_id, { from: e.from_open_time, to: e.to_open_time, state: "open", missing: e.missing_bars });
          gapLog.push({ id: e.segment_id, state: "open", at: Date.now() });
          drawGaps();
          break;
        case "gap_repaired": {
          const s = segments.get(e.segment_id) || { from: e.from_open_time, to: e.to_open_time };
          segments.set(e.segment_id, { ...s, state: "repaired" });
          gapLog.push({ id: e.segment_id, state: "repaired", at: Date.now() });
          drawGaps();
          break;
        }
        default: break;
      }
    },
    onState: (s, detail) => {
      const text = { connecting: "connecting…", live: "live", reconnecting: `reconnecting${detail ? ` (${detail})` : ""}`,
        closed: `closed${detail ? `: ${detail}` : ""}`, idle: "not connected" }[s] || s;
      setConnection(s, text);
    },
    onClose: (ev) => toast(`The live feed closed (${ev.code}): ${ev.reason || "no reason given"}`),
  });
  socket.start();
  const tick = setInterval(() => {
    if (socket.current !== "live") return;
    const lag = socket.lagMs();
    setConnection("live", `live · seq ${socket.lastSeq}${lag === null ? "" : ` · lag ${num(lag / 1000, 1)} s`}`);
    const last = bars.get(lastTime);
    status.textContent = last
      ? `${bars.size} bars · last ${isoTime(lastTime * 1000)} close ${last.close}${lastEvent ? ` · last event ${lastEvent.type}` : ""}`
      : "no candles stored yet";
  }, 500);

  return {
    socket,
    bars: () => bars.size,
    lastBar: () => bars.get(lastTime) || null,
    bar: (openTimeMs) => bars.get(openTimeMs / 1000) || null,
    gaps: () => [...segments.entries()].map(([id, s]) => ({ id, ...s })),
    gapLog: () => gapLog.slice(),
    counts: () => ({ ...counts }),
    overlayPoints: () => gapSeries.data().length,
    stop() {
      clearInterval(tick);
      socket.stop();
      chart.remove();
    },
  };
}

export default { start };
