// Features and models: the latest feature row and its drift flags, production vs candidate
// metrics, promotion events, training jobs, live calibration (ECE, Brier, the reliability
// diagram against the model's validation), the Evidently reports and the inference playground.
import { api, getKey, qs } from "../api.js";
import { badge, empty, h, isoTime, kpi, mount, num, panel, svgEl, table } from "../ui.js";

/** The reliability diagram: observed frequency against confidence, per bin; the diagonal is perfect. */
export function reliability(series, { size = 260 } = {}) {
  const pad = 28, w = size, inner = w - 2 * pad;
  const x = (v) => pad + v * inner, y = (v) => w - pad - v * inner;
  const svg = svgEl("svg", { width: w, height: w, viewBox: `0 0 ${w} ${w}`, role: "img", "aria-label": "Reliability diagram" });
  svg.append(svgEl("rect", { x: pad, y: pad, width: inner, height: inner, fill: "none", stroke: "#2c3945" }));
  svg.append(svgEl("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(1), stroke: "#8b98a5", "stroke-dasharray": "4 3" }));
  for (const t of [0, 0.5, 1]) {
    svg.append(svgEl("text", { x: x(t) - 6, y: w - 8 }, String(t)));
    svg.append(svgEl("text", { x: 2, y: y(t) + 4 }, String(t)));
  }
  series.forEach(({ bins, colour, name }, k) => {
    const pts = (bins || []).filter((b) => b.count > 0 && b.confidence !== null && b.observed !== null);
    if (pts.length) {
      svg.append(svgEl("polyline", { points: pts.map((b) => `${x(b.confidence)},${y(b.observed)}`).join(" "),
        fill: "none", stroke: colour, "stroke-width": 2, "data-series": name }));
      for (const b of pts) svg.append(svgEl("circle", { cx: x(b.confidence), cy: y(b.observed), r: 3, fill: colour }));
    }
    svg.append(svgEl("text", { x: pad + 6, y: pad + 14 + 14 * k, style: `fill:${colour}` }, name));
  });
  return svg;
}

const METRICS = ["auc", "accuracy", "brier", "log_loss", "ece", "mce"];

function modelColumn(m) {
  if (!m) return empty("none");
  return h("div", {},
    h("p", {}, h("code", {}, m.model_id), " ", m.version !== undefined ? `v${m.version}` : ""),
    table([["metric", (k) => k], ["value", (k) => num(m.metrics?.[k], 4)]], METRICS));
}

async function start(root, { params }) {
  const { streams } = await api("/api/ohlcv/streams");
  const [symbol = streams[0].symbol, interval = streams[0].interval] = params;
  const picker = h("select", { id: "model-stream", "aria-label": "Stream" },
    streams.map((s) => h("option", { value: `${s.symbol}/${s.interval}`, selected: s.symbol === symbol && s.interval === interval }, `${s.symbol} ${s.interval}`)));
  picker.addEventListener("change", () => { location.hash = `#/models/${picker.value}`; });
  const q = qs({ symbol, interval });
  const slots = Object.fromEntries(["features", "drift", "summary", "calibration", "events", "jobs", "reports", "playground"]
    .map((k) => [k, h("div", { id: `models-${k}` }, empty("loading…"))]));
  mount(root,
    h("h1", {}, "Features & models"),
    h("div", { class: "row" }, h("label", { for: "model-stream" }, "Stream"), picker),
    h("div", { class: "grid" },
      panel("Latest features", slots.features), panel("Feature drift", slots.drift),
      h("section", { class: "panel wide", "aria-label": "Production and candidate" }, h("h2", {}, "Production vs candidate"), slots.summary),
      h("section", { class: "panel wide", "aria-label": "Live calibration" }, h("h2", {}, "Live calibration"), slots.calibration),
      h("section", { class: "panel wide", "aria-label": "Promotion events" }, h("h2", {}, "Promotion events"), slots.events),
      h("section", { class: "panel wide", "aria-label": "Training jobs" }, h("h2", {}, "Training jobs"), slots.jobs),
      panel("Evidently reports", slots.reports), panel("Inference playground", slots.playground)));

  const fill = async (slot, fn) => {
    try {
      mount(slot, await fn());
    } catch (err) {
      mount(slot, empty(err.status === 404 ? "nothing yet" : `unavailable: ${err.detail || err.message}`));
    }
  };
  await Promise.all([
    fill(slots.features, async () => {
      const row = await api(`/api/features/latest${q}`, { quiet: true });
      const skip = new Set(["symbol", "interval", "open_time", "emitted_at", "event_seq"]);
      const show = (v) => (typeof v !== "number" ? String(v) : Number.isInteger(v) ? v.toLocaleString("en-US") : num(v, 6));
      return h("div", {},
        h("p", {}, `bar ${isoTime(row.open_time)} · window `, badge(row.window_complete ? "complete" : "incomplete"),
          row.window_has_repair ? " · repaired inside" : ""),
        table([["feature", ([k]) => k], ["value", ([, v]) => show(v)]],
          Object.entries(row).filter(([k, v]) => !skip.has(k) && v !== null && typeof v !== "object")));
    }),
    fill(slots.drift, async () => {
      const d = await api(`/api/features/drift${q}`, { quiet: true });
      const feats = d.features || [];
      return h("div", {},
        h("p", { class: "muted" }, `${feats.filter((f) => f.drifted).length} of ${feats.length} features flagged`),
        table([["feature", (f) => f.name], ["z", (f) => num(f.z, 2)], ["flag", (f) => (f.drifted ? badge("breach") : badge("ok"))]], feats));
    }),
    fill(slots.summary, async () => {
      const s = await api(`/api/models/summary${q}`);
      return h("div", {},
        h("p", {}, `${s.models} model(s) · promotion `, badge(s.promote_recommend ? "recommended" : "not recommended"),
          s.reasons.length ? ` (${s.reasons.join("; ")})` : ""),
        h("div", { class: "grid" }, h("div", {}, h("h3", {}, "Production"), modelColumn(s.production)),
          h("div", {}, h("h3", {}, "Candidate"), modelColumn(s.candidate))));
    }),
    fill(slots.calibration, async () => {
      const c = await api(`/api/inference/calibration/live${q}`, { quiet: true });
      const live = c.live || {};
      const prod = c.production || {};
      return h("div", { class: "row", style: "align-items:flex-start;gap:24px" },
        reliability([{ name: "validation", colour: "#8b98a5", bins: prod.bins }, { name: "live", colour: "#6cb6ff", bins: live.bins }]),
        h("div", {},
          h("div", { class: "kpis" }, kpi("status", badge(c.status)), kpi("live ECE", num(live.ece, 4), { id: "live-ece" }),
            kpi("validation ECE", num(prod.ece, 4)), kpi("live Brier", num(live.brier, 4)), kpi("rows", num(c.rows, 0)),
            kpi("flagged rows", num(c.flagged_rows, 0)), kpi("breach streak", `${c.streak} / ${c.thresholds.streak}`)),
          c.recommend_retrain ? h("p", {}, badge("breach"), " retrain recommended") : null,
          h("h3", {}, "Recent checks"),
          c.checks.length ? table([["at", (k) => isoTime(k.at)], ["status", (k) => badge(k.status)], ["ECE", (k) => num(k.ece, 4)]], c.checks)
            : empty("no checks recorded yet")));
    }),
    fill(slots.events, async () => {
      const rows = await api(`/api/models/promotion/events${q}`);
      return rows.length ? table([["at", (e) => isoTime(e.at)], ["kind", (e) => e.kind], ["to", (e) => e.to_model_id],
        ["from", (e) => e.from_model_id || "–"], ["by", (e) => e.actor], ["reasons", (e) => (e.reasons || []).join("; ") || "–"]], rows)
        : empty("no promotion events");
    }),
    fill(slots.jobs, async () => {
      const jobs = await api("/api/training/jobs?limit=20");
      return jobs.length ? table([["started", (j) => isoTime(j.started_at)], ["stream", (j) => `${j.symbol} ${j.interval}`],
        ["status", (j) => badge(j.status)], ["trigger", (j) => j.trigger], ["model", (j) => j.model_id || "–"],
        ["error", (j) => j.error || "–"]], jobs)
        : empty("no training jobs");
    }),
    fill(slots.reports, async () => {
      const reps = await api(`/api/reports${q}&limit=10`);
      const key = encodeURIComponent(getKey());
      return reps.length ? table([["report", (r) => h("a", { href: `${r.url}?api_key=${key}`, target: "_blank", rel: "noopener" }, r.kind)],
        ["at", (r) => isoTime(r.created_at ?? r.at)], ["model", (r) => r.model_id]], reps)
        : empty("no reports yet: the monitor writes them, or POST /api/reports/run");
    }),
    fill(slots.playground, async () => playground(symbol, interval)),
  ]);
  return {};
}

function playground(symbol, interval) {
  const out = h("div", { id: "playground-result", "aria-live": "polite" });
  const at = h("input", { id: "pg-open-time", type: "number", min: 0, placeholder: "newest row" });
  const thr = h("input", { id: "pg-threshold", type: "number", min: 0.01, max: 0.99, step: 0.01, placeholder: "configured" });
  const form = h("form", { class: "inline" },
    h("label", {}, "open time (ms)", at), h("label", {}, "threshold", thr),
    h("button", { type: "submit" }, "Score"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { symbol, interval };
    if (at.value) body.open_time = Number(at.value);
    if (thr.value) body.threshold = Number(thr.value);
    try {
      const r = await api("/api/inference/predict", { method: "POST", body });
      mount(out, h("div", { class: "kpis" }, kpi("probability", num(r.probability, 4)), kpi("decision", r.decision ? "long" : "flat"),
        kpi("bar", isoTime(r.open_time)), kpi("window", r.window_complete ? "complete" : "incomplete"), kpi("model", r.model_id)));
    } catch (err) {
      mount(out, empty(`not scored: ${err.detail || err.message}`));
    }
  });
  return h("div", {}, form, out);
}

export default { start };
