// The console shell: hash routes to views, the API key dialog, the connection indicator.
import { ApiError, getKey, onKeyNeeded, setKey } from "./api.js";
import { h, mount, toast } from "./ui.js";
import candles from "./views/candles.js";
import continuity from "./views/continuity.js";
import models from "./views/models.js";
import news from "./views/news.js";
import risk from "./views/risk.js";

const VIEWS = { candles, continuity, models, risk, news };
const main = document.getElementById("main");
const conn = document.getElementById("conn");
const dialog = document.getElementById("key-dialog");
let current = null;

// for the browser tests and for a curious user: the current view's live handles
window.ohlcvConsole = { view: null, errors: [] };
window.addEventListener("error", (e) => window.ohlcvConsole.errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => {
  // API failures already showed a toast; anything else is a console bug worth seeing
  if (!(e.reason instanceof ApiError)) window.ohlcvConsole.errors.push(String(e.reason));
});

export function setConnection(state, text) {
  conn.dataset.state = state;
  conn.textContent = text;
}

function askKey() {
  if (dialog.open) return;
  document.getElementById("key-input").value = getKey();
  dialog.showModal();
}
onKeyNeeded(askKey);
document.getElementById("key-button").addEventListener("click", askKey);
document.getElementById("key-cancel").addEventListener("click", () => {
  dialog.close();
  if (!current) route();
});
document.getElementById("key-form").addEventListener("submit", () => {
  setKey(document.getElementById("key-input").value.trim());
  toast("API key saved in this browser", { kind: "info", ttl: 3000 });
  route();
});

async function route(ev) {
  const [, name = "candles", ...rest] = location.hash.split("/");
  const view = VIEWS[name] || candles;
  if (current && current.stop) current.stop();
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  setConnection("idle", "no live feed on this view");
  const root = h("div", { "data-view": name });
  mount(main, root);
  window.ohlcvConsole.ready = null;
  try {
    current = await view.start(root, { params: rest, setConnection });
  } catch (err) {
    current = null;
    if (!(err instanceof ApiError)) throw err;
    mount(root, h("p", { class: "muted" }, `This view could not load: ${err.message} (request ${err.requestId || "–"}).`));
    return;
  }
  window.ohlcvConsole.view = current;
  window.ohlcvConsole.ready = name;
  if (ev) main.focus({ preventScroll: true }); // a view opened from the nav: focus its content
}

window.addEventListener("hashchange", route);
if (getKey()) route();
else askKey(); // the first view starts once a key is saved
