// REST calls with the API key kept in the browser; every failed call shows a toast with its
// request id (the API's X-Request-ID), and a 401/403 asks for the key again.
import { toast } from "./ui.js";

const KEY = "ohlcv.apiKey";

export const getKey = () => localStorage.getItem(KEY) || "";
export const setKey = (k) => localStorage.setItem(KEY, k);

export class ApiError extends Error {
  constructor(status, detail, requestId, path) {
    super(`${status} ${detail}`);
    this.status = status;
    this.detail = detail;
    this.requestId = requestId;
    this.path = path;
  }
}

let askKey = () => {};
export function onKeyNeeded(fn) {
  askKey = fn;
}

/** GET (or another method with a JSON body) ``path``; resolves to the parsed JSON. */
export async function api(path, { method = "GET", body = undefined, quiet = false } = {}) {
  const headers = { "X-API-Key": getKey() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    if (!quiet) toast(`${method} ${path}: the API is unreachable (${err.message})`);
    throw new ApiError(0, "unreachable", null, path);
  }
  const rid = res.headers.get("X-Request-ID");
  if (!res.ok) {
    let detail = res.statusText;
    try {
      const j = await res.json();
      detail = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail ?? j);
    } catch { /* not JSON */ }
    if (!quiet) toast(`${method} ${path} failed: ${res.status} ${detail}`, { requestId: rid });
    if (res.status === 401 || res.status === 403) askKey();
    throw new ApiError(res.status, detail, rid, path);
  }
  return res.json();
}

/** Query string from an object, skipping null/undefined/"" values. */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") u.set(k, String(v));
  const s = u.toString();
  return s ? `?${s}` : "";
}
