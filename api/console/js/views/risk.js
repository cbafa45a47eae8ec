// Risk: the account and each book (equity, drawdown, exposure), the equity and drawdown curves,
// positions, fills, the limits (and a form to change them), the trading activity panel with the
// original's rule: idle (no decision in 5 minutes), warming (under 5), active (5 or more).
import { AreaSeries, LineSeries, createChart } from "lightweight-charts";
import { api, qs } from "../api.js";
import { badge, empty, h, isoTime, kpi, mount, num, panel, pct, table } from "../ui.js";
import { chartOptions } from "./candles.js";

async function start(root, { params }) {
  const slots = Object.fromEntries(["activity", "account", "books", "positions", "fills", "limits"]
    .map((k) => [k, h("div", { id: `risk-${k}` }, empty("loading…"))]));
  const equityBox = h("div", { class: "chart small", id: "equity-chart", role: "img", "aria-label": "Equity curve" });
  const ddBox = h("div", { class: "chart small", id: "drawdown-chart", role: "img", "aria-label": "Drawdown curve" });
  const curvePicker = h("select", { id: "curve-stream", "aria-label": "Book" });
  mount(root,
    h("h1", {}, "Risk"),
    h("div", { class: "grid" },
      panel("Trading activity", slots.activity),
      panel("Account", slots.account),
      h("section", { class: "panel wide", "aria-label": "Books" }, h("h2", {}, "Books"), slots.books),
      h("section", { class: "panel wide", "aria-label": "Equity and drawdown" },
        h("div", { class: "row" }, h("h2", {}, "Equity and drawdown"), curvePicker), equityBox, ddBox),
      panel("Positions", slots.positions),
      h("section", { class: "panel wide", "aria-label": "Fills" }, h("h2", {}, "Fills (newest 50)"), slots.fills),
      h("section", { class: "panel wide", "aria-label": "Limits" }, h("h2", {}, "Limits"), slots.limits)));

  const charts = [];
  const [act, st, pos, fills, lim] = await Promise.all([
    api("/api/inference/activity/summary"), api("/api/risk/state"), api("/api/risk/positions"),
    api("/api/risk/fills?limit=50"), api("/api/risk/limits"),
  ]);
  mount(slots.activity, h("div", { class: "kpis" },
    kpi("status", badge(act.status), { id: "activity-status" }), kpi("decisions 1m", act.decisions_1m), kpi("decisions 5m", act.decisions_5m),
    kpi("last decision", isoTime(act.last_decision_ts)), kpi("inline scoring", act.auto_loop_enabled ? "on" : "off")),
  h("p", { class: "muted" }, "idle: no decision in 5 min · warming: under 5 · active: 5 or more"));
  const a = st.account || {};
  mount(slots.account, h("div", { class: "kpis" },
    kpi("equity", num(st.equity), { id: "account-equity" }), kpi("cash", num(st.cash)), kpi("exposure", num(st.exposure)),
    kpi("committed", num(a.committed_exposure)), kpi("max total exposure", num(a.max_total_exposure)),
    kpi("utilization", pct(a.utilization, 1))));
  mount(slots.books, st.books.length ? table([
    ["book", (b) => `${b.symbol} ${b.interval}`], ["bar", (b) => isoTime(b.open_time)], ["equity", (b) => num(b.equity)],
    ["cash", (b) => num(b.cash)], ["position", (b) => num(b.position_qty, 4)], ["exposure", (b) => num(b.exposure)],
    ["drawdown", (b) => pct(b.drawdown)], ["peak", (b) => num(b.peak_equity)], ["utilization", (b) => pct(b.utilization, 1)],
    ["pending", (b) => b.pending || "–"], ["cooldown", (b) => b.cooldown_left],
  ], st.books, { id: "books-table" }) : empty("no books yet: the risk topology writes one per scored stream"));
  mount(slots.positions, pos.length ? table([
    ["book", (p) => `${p.symbol} ${p.interval}`], ["qty", (p) => num(p.qty, 4)], ["entry", (p) => num(p.entry_price, 5)],
    ["last", (p) => num(p.last_close, 5)], ["value", (p) => num(p.market_value)], ["unrealized", (p) => num(p.unrealized_pnl)],
  ], pos) : empty("flat: no open position"));
  mount(slots.fills, fills.fills.length ? table([
    ["bar", (f) => isoTime(f.open_time)], ["book", (f) => `${f.symbol} ${f.interval}`], ["side", (f) => f.side],
    ["reason", (f) => f.reason], ["qty", (f) => num(f.qty, 4)], ["price", (f) => num(f.price, 5)], ["fee", (f) => num(f.fee)],
    ["P&L", (f) => num(f.realized_pnl)],
  ], fills.fills, { id: "fills-table" }) : empty("no fills yet"));
  mount(slots.limits, limitsForm(lim));

  const books = st.books.map((b) => `${b.symbol}/${b.interval}`);
  curvePicker.replaceChildren(...books.map((k) => h("option", { value: k, selected: k === params.join("/") }, k.replace("/", " "))));
  const eqChart = createChart(equityBox, chartOptions(220));
  const ddChart = createChart(ddBox, chartOptions(220));
  charts.push(eqChart, ddChart);
  const eqLine = eqChart.addSeries(LineSeries, { color: "#6cb6ff", lineWidth: 2 });
  const ddArea = ddChart.addSeries(AreaSeries, { lineColor: "#f85149", topColor: "rgba(248,81,73,0.05)", bottomColor: "rgba(248,81,73,0.4)",
    invertFilledArea: true, priceFormat: { type: "percent" } });
  let curve = [];
  const showCurve = async (key) => {
    if (!key) return;
    const [symbol, interval] = key.split("/");
    const res = await api(`/api/risk/equity${qs({ symbol, interval, limit: 100000 })}`);
    curve = res.points;
    eqLine.setData(curve.map((p) => ({ time: p.open_time / 1000, value: p.equity })));
    ddArea.setData(curve.map((p) => ({ time: p.open_time / 1000, value: -100 * p.drawdown })));
    eqChart.timeScale().fitContent();
    ddChart.timeScale().fitContent();
  };
  curvePicker.addEventListener("change", () => showCurve(curvePicker.value));
  if (books.length) await showCurve(curvePicker.value || books[0]);
  else mount(equityBox, empty("no equity curve yet"));

  return {
    state: st,
    curvePoints: () => curve.length,
    stop() {
      for (const c of charts) c.remove();
    },
  };
}

const FIELDS = [
  ["max_position_notional", "max position (quote)"], ["max_total_exposure", "max total exposure (quote)"],
  ["max_daily_loss", "max daily loss (quote)"], ["max_drawdown", "max drawdown (fraction)"],
  ["stop_loss_pct", "stop loss (fraction)"], ["cooldown_bars", "cooldown (bars)"], ["fee_bps", "fee (bps)"],
  ["slippage_bps", "slippage (bps)"],
];

function limitsForm(lim) {
  const inputs = {};
  const form = h("form", { class: "inline", id: "limits-form" },
    FIELDS.map(([k, label]) => {
      inputs[k] = h("input", { name: k, type: "number", step: "any", value: lim.limits[k], required: true });
      return h("label", {}, label, inputs[k]);
    }),
    h("button", { type: "submit" }, "Apply from the next bar"));
  const note = h("p", { class: "muted", "aria-live": "polite" },
    lim.effective_from ? `in force since ${isoTime(lim.effective_from)} · ${lim.changes.length} change(s)` : "the RISK_* defaults");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = Object.fromEntries(FIELDS.map(([k]) => [k, Number(inputs[k].value)]));
    try {
      const r = await api("/api/risk/limits", { method: "PUT", body });
      note.textContent = `saved: in force from ${isoTime(r.effective_from)}`;
    } catch (err) {
      note.textContent = `refused: ${err.detail}`;
    }
  });
  return h("div", {}, form, note);
}

export default { start };
