// News: each source's health (score, stall, anomalies, the dedup ratio of its last polls as a
// sparkline), the stories of a summary window, and search.
import { api, qs } from "../api.js";
import { badge, empty, h, isoTime, kpi, mount, num, panel, sparkline, table } from "../ui.js";

function stories(articles) {
  return articles.length ? table([
    ["published", (a) => isoTime(a.published_at)], ["source", (a) => a.source],
    ["title", (a) => (a.link ? h("a", { href: a.link, target: "_blank", rel: "noopener noreferrer" }, a.title) : a.title)],
    ["sentiment", (a) => (a.sentiment_label ? `${a.sentiment_label} ${num(a.sentiment, 2)}` : "–")],
  ], articles) : empty("no stories");
}

async function start(root) {
  const slots = Object.fromEntries(["sources", "summary", "results"].map((k) => [k, h("div", { id: `news-${k}` }, empty("loading…"))]));
  const windowSel = h("select", { id: "news-window", "aria-label": "Summary window" },
    [[60, "last hour"], [1440, "last day"], [10080, "last week"], [525600, "last year"]].map(([v, l]) => h("option", { value: v }, l)));
  const q = h("input", { id: "news-q", type: "search", minlength: 2, placeholder: "search titles and summaries", "aria-label": "Search" });
  const searchForm = h("form", { class: "row", role: "search" }, q, h("button", { type: "submit" }, "Search"));
  mount(root,
    h("h1", {}, "News"),
    h("div", { class: "grid" },
      h("section", { class: "panel wide", "aria-label": "Sources" }, h("h2", {}, "Source health"), slots.sources),
      h("section", { class: "panel wide", "aria-label": "Summary" }, h("div", { class: "row" }, h("h2", {}, "Summary"), windowSel), slots.summary),
      h("section", { class: "panel wide", "aria-label": "Search" }, h("h2", {}, "Search"), searchForm, slots.results)));

  const [srcs, recent] = await Promise.all([api("/api/news/sources?include_history=true"), api("/api/news/recent?limit=20")]);
  mount(slots.sources, srcs.length ? table([
    ["source", (s) => s.source], ["score", (s) => h("b", { "data-score": s.health_score }, num(s.health_score, 2))],
    ["state", (s) => (s.stalled ? badge("stalled") : badge("ok"))],
    ["anomalies", (s) => (s.anomalies.length ? s.anomalies.join(", ") : "–")],
    ["dedup (last polls)", (s) => sparkline((s.history || []).slice().reverse().map((p) => (p.raw ? p.unique / p.raw : null)),
      { label: `dedup ratio of ${s.source}` })],
    ["last ratio", (s) => num(s.dedup_last_ratio, 2)], ["polls", (s) => s.polls], ["last poll", (s) => isoTime(s.last_poll_at)],
    ["error streak", (s) => s.error_streak], ["last error", (s) => s.last_error || "–"],
  ], srcs, { id: "sources-table" }) : empty("no source has been polled yet"));

  const showSummary = async () => {
    const s = await api(`/api/news/summary${qs({ window_minutes: windowSel.value })}`);
    mount(slots.summary, h("div", { class: "kpis" },
      kpi("stories", num(s.total, 0), { id: "news-total" }), kpi("mean sentiment", num(s.avg, 3)),
      kpi("positive", s.positive), kpi("neutral", s.neutral), kpi("negative", s.negative)),
    h("p", { class: "muted" }, Object.entries(s.by_source).map(([k, v]) => `${k}: ${v}`).join(" · ") || "no stories in the window"),
    h("h3", {}, "Newest stories"), stories(recent.articles || recent));
  };
  windowSel.addEventListener("change", showSummary);
  await showSummary();

  mount(slots.results, empty("type at least 2 characters"));
  searchForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (q.value.trim().length < 2) {
      mount(slots.results, empty("type at least 2 characters"));
      return;
    }
    const r = await api(`/api/news/search${qs({ q: q.value.trim(), days: 3650, limit: 50 })}`);
    mount(slots.results, h("p", { class: "muted", id: "news-search-total" }, `${r.total} match(es)`), stories(r.articles));
  });
  return {};
}

export default { start };
