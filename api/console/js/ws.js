// The sequenced candle WebSocket (/ws/ohlcv): a snapshot, then every event in seq order.
// After a drop it reconnects with since_seq = the last seq applied, so the chart resumes
// exactly where it was, without a reload (the server answers with the missed events, or a
// fresh snapshot with a reason when they are no longer stored).
import { getKey } from "./api.js";

const FINAL = new Set([4401, 4403, 4422]); // wrong key, stream not served, bad parameter: no retry

export class CandleSocket {
  constructor({ symbol, interval, limit = 500, onSnapshot, onEvent, onState, onClose }) {
    Object.assign(this, { symbol, interval, limit, onSnapshot, onEvent, onState, onClose });
    this.lastSeq = null;
    this.lastEmittedAt = null;
    this.stopped = false;
    this.retries = 0;
    this.resumes = 0;
    this.ws = null;
  }

  url() {
    const p = new URLSearchParams({ symbol: this.symbol, interval: this.interval, api_key: getKey() });
    if (this.lastSeq !== null) p.set("since_seq", String(this.lastSeq));
    else p.set("limit", String(this.limit));
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/ws/ohlcv?${p}`;
  }

  start() {
    this.stopped = false;
    this.state(this.lastSeq === null ? "connecting" : "reconnecting");
    const ws = (this.ws = new WebSocket(this.url()));
    ws.onopen = () => {
      if (this.lastSeq !== null) this.resumes += 1;
      this.retries = 0;
      this.state("live");
    };
    ws.onmessage = (m) => this.receive(JSON.parse(m.data));
    ws.onclose = (ev) => {
      if (ws !== this.ws || this.stopped) return;
      if (FINAL.has(ev.code)) {
        this.state("closed", ev.reason);
        if (this.onClose) this.onClose(ev);
        return;
      }
      const wait = Math.min(10_000, 500 * 2 ** this.retries++);
      this.state("reconnecting", `${ev.code} ${ev.reason || ""}`.trim());
      this.timer = setTimeout(() => this.start(), wait);
    };
  }

  receive(msg) {
    if (msg.type === "snapshot") {
      this.lastSeq = msg.seq;
      this.onSnapshot(msg);
      return;
    }
    if (typeof msg.seq !== "number") {
      this.onEvent(msg); // features / news: not sequenced
      return;
    }
    if (this.lastSeq !== null && msg.seq <= this.lastSeq) return; // already applied
    if (this.lastSeq !== null && msg.seq > this.lastSeq + 1) {
      this.drop(); // a hole the server promised not to leave: resume from the last applied seq
      return;
    }
    this.lastSeq = msg.seq;
    this.lastEmittedAt = msg.emitted_at ?? null;
    this.onEvent(msg);
  }

  /** Close the socket as a network drop would: it reconnects and resumes with since_seq. */
  drop() {
    if (this.ws) this.ws.close(4000, "client drop");
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "view closed");
    this.state("idle");
  }

  lagMs() {
    return this.lastEmittedAt === null ? null : Date.now() - this.lastEmittedAt;
  }

  state(s, detail = "") {
    this.current = s;
    if (this.onState) this.onState(s, detail);
  }
}
