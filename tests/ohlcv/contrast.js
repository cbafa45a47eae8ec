// The worst WCAG contrast ratio of the visible text on the page, against the background it is
// drawn on (the nearest opaque ancestor). Evaluated by tests/ohlcv/console.py.
(() => {
  const rgb = (s) => (s.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
  const bg = (el) => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3); } return [15, 20, 25]; };
  let worst = { ratio: 99 };
  for (const el of document.querySelectorAll("h1, h2, th, td, p, .muted, .badge, nav a, label, .kpi span, .kpi b, button")) {
    if (!el.offsetParent || !el.textContent.trim()) continue;
    const [a, b] = [lum(rgb(getComputedStyle(el).color).slice(0, 3)), lum(bg(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < worst.ratio) worst = { ratio, text: el.textContent.trim().slice(0, 40), cls: el.className };
  }
  return worst;
})()
