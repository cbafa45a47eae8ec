"""The per-stream candle state machine: pure logic, no I/O, no Quix.

For one (symbol, interval) stream it turns each incoming kline into the outputs the rest of the
system acts on. It reads and writes a key-value ``StreamState`` (Quix's per-key ``State`` in the
topology, a dict in tests) and asks a ``Lookup`` (ClickHouse in the topology) only for candles
older than anything it holds.

Outputs are plain dicts with a ``kind``:

- ``"event"``: a candle event (schemas.events) with its ``seq``; published and stored.
- ``"segment"``: the new state of one gap segment (a row of ``gap_segments``); stored only.
- ``"candle"``: a candle row to store that no event carries (not used for closed candles, whose
  row rides on their append/repair event).

Rules (``step`` = the interval length):

- partial (``x:false``): ``partial_update`` unless the candle already closed or nothing changed.
- closed, never seen, right after the last closed one (or the first ever): ``partial_close`` +
  ``append``.
- closed, never seen, more than one step after the last closed one: ``gap_detected`` for the
  missing range (a new segment), then ``partial_close`` + ``append``.
- closed, never seen, before the first closed one: history arriving backwards; a hole between it
  and the first one is a gap like any other. ``append`` with ``late: true``.
- closed, never seen, between first and last: a late fill. It shrinks or splits the open segment
  it falls in; ``gap_repaired`` when a segment empties. ``append`` with ``late: true``.
- closed, seen before with the same values: nothing (idempotent replay).
- closed, seen before with different values: ``repair`` with the next revision.

A batch record (many closed klines of one stream, ``apply_many``) follows the same rules in
order, with two differences that change no stored row: consecutive new candles of the same
kind (in order, or late) share one ``append``, and ``partial_close`` is emitted only for a
candle whose in-progress state the stream had shown. Segment rows are emitted once per batch
per segment, in their last state.

State per stream: ``meta`` (first/last closed open time, seq, open segments, the shown
partial) and the remembered closed candles in buckets (``KnownCandles``), bounded to the
newest KEEP_BUCKETS buckets; older candles are looked up in the record, one query per batch.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from schemas.events import candle_out
from schemas.intervals import interval_ms
from schemas.klines import Candle

META = "meta"

#: (values fingerprint, revision) of a stored closed candle
Known = tuple[list[Any], int]


class StreamState(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...
    def delete(self, key: str) -> None: ...


class Lookup(Protocol):
    """The durable record, for what the state does not hold (ClickHouse in production)."""

    def seed(self, symbol: str, interval: str) -> dict[str, Any]:
        """``{"first_closed", "last_closed", "seq", "segments": [[id, from, to, detected_at, end]]}``

        A segment answers for the bars ``id .. end``; ``from .. to`` is what is still missing.
        """
        ...

    def closed_candles(
        self, symbol: str, interval: str, open_times: list[int], max_seq: int | None = None
    ) -> dict[int, Known]:
        """The stored closed candles among ``open_times`` (one round trip for all of them); with
        ``max_seq``, their newest version announced by an event of seq <= max_seq."""
        ...


def fingerprint(c: Candle) -> list[Any]:
    return [c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades,
            c.taker_buy_base, c.taker_buy_quote, c.bars]  # fmt: skip


#: closed candles are remembered in state in buckets of this many bars, one state key each
BUCKET_BARS = 16
#: buckets kept per stream behind the newest (6 days of 1m); older candles are asked of the record
KEEP_BUCKETS = 540
#: most candles one ``append`` event carries
MAX_APPEND = 1000


class KnownCandles:
    """The closed candles a stream remembers: ``{"open_time": [fingerprint, revision]}`` per
    bucket of BUCKET_BARS bars, read at most once and written back once per ``apply_many``.

    A bucket carries the generation it was written in; one from an older generation (written
    before the state was found behind the record) is ignored, so the record decides.
    """

    def __init__(self, state: StreamState, meta: dict[str, Any], step: int):
        self.state = state
        self.meta = meta
        self.span = step * BUCKET_BARS
        self.gen = int(meta.get("gen") or 0)
        self.buckets: dict[int, dict[str, list[Any]]] = {}
        self.dirty: set[int] = set()

    def bucket(self, b: int) -> dict[str, list[Any]]:
        """Bucket ``b`` (``open_time // span``), read from state on first use, keyed by the open
        time as a string (the stored form: no conversion on read or write)."""
        d = self.buckets.get(b)
        if d is None:
            v = self.state.get(f"k{b}")
            d = v["c"] if v is not None and v.get("g") == self.gen else {}
            self.buckets[b] = d
        return d

    def get(self, t: int) -> Known | None:
        k = self.bucket(t // self.span).get(str(t))
        return None if k is None else (k[0], int(k[1]))

    def flush(self) -> None:
        """Write the changed buckets back; buckets more than KEEP_BUCKETS behind the newest are
        dropped from state (the record answers for them)."""
        if not self.dirty:
            return
        newest = max(self.dirty)
        kmax = self.meta.get("kmax")
        if kmax is None or newest > kmax:
            if kmax is not None:
                # the window moved from (kmax - KEEP, kmax] to (newest - KEEP, newest]
                for b in range(kmax - KEEP_BUCKETS + 1, min(kmax, newest - KEEP_BUCKETS) + 1):
                    self.state.delete(f"k{b}")
            self.meta["kmax"] = kmax = newest
        for b in self.dirty:
            if b > kmax - KEEP_BUCKETS:
                self.state.set(f"k{b}", {"g": self.gen, "c": self.buckets[b]})
        self.dirty.clear()


class _Batch:
    """What one ``apply_many`` carries between candles."""

    __slots__ = ("batch", "known", "now", "out", "rows", "step", "stored")

    def __init__(self, known: KnownCandles, stored: dict[int, Known], now: int, step: int, batch: bool):
        self.known = known
        self.stored = stored
        self.now = now
        self.step = step
        self.batch = batch
        self.out: list[dict[str, Any]] = []
        #: segment rows by segment id, the last state of each (stored after the events)
        self.rows: dict[int, dict[str, Any]] = {}


class CandleStateMachine:
    """Applies candles to a stream's state; see the module docstring."""

    def __init__(self, lookup: Lookup, clock_ms: Callable[[], int]):
        self.lookup = lookup
        self.clock_ms = clock_ms
        #: streams whose meta was re-seeded from the durable record in this process
        self.seeded: set[str] = set()

    # --- state --------------------------------------------------------------------------
    def _meta(self, c: Candle, state: StreamState) -> dict[str, Any]:
        current: dict[str, Any] | None = state.get(META)
        # re-seed on the first message of the stream in this process, and whenever the state
        # has no meta: an aborted checkpoint (e.g. ClickHouse backpressure) rolls back the
        # state transaction that held the first seed
        if c.key not in self.seeded or current is None:
            # ClickHouse is the record: on the first message of a stream in this process the
            # state is re-seeded from it (after a restart of the process or of a memory-only
            # broker, local state may be behind or ahead of what was durably written).
            seed = self.lookup.seed(c.symbol, c.interval)
            meta = current or {}
            if int(meta.get("seq") or 0) < int(seed.get("seq") or 0):
                # the state is behind the record (lost, or a crash between the sink's flush and
                # the state's): a candle it remembers may have changed since, so the buckets
                # written before now are ignored and the record asked instead (KnownCandles)
                meta["gen"] = int(meta.get("gen") or 0) + 1
            meta.update(
                first=seed.get("first_closed"),
                last=seed.get("last_closed"),
                seq=max(int(seed.get("seq") or 0), int(meta.get("seq") or 0)),
                segs=[list(s) for s in seed.get("segments", [])],
                # closed candles a batch stored without its events (a crash between inserts)
                torn=list(seed.get("torn") or ()),
                torn_seq=int(seed.get("seq") or 0),
            )
            meta.setdefault("partial", None)
            state.set(META, meta)
            self.seeded.add(c.key)
            return meta
        return current

    # --- events -------------------------------------------------------------------------
    def _event(self, c: Candle, meta: dict[str, Any], now: int, body: dict[str, Any]) -> dict[str, Any]:
        meta["seq"] = int(meta["seq"]) + 1
        return {"kind": "event", "symbol": c.symbol, "interval": c.interval, "seq": meta["seq"],
                "emitted_at": now, **body}  # fmt: skip

    def _segment_row(self, c: Candle, seg: list[int], state: str, now: int, step: int,
                     repaired_at: int | None = None) -> dict[str, Any]:  # fmt: skip
        sid, frm, to, detected, end = seg
        return {"kind": "segment", "symbol": c.symbol, "interval": c.interval, "segment_id": sid,
                "segment_end": end, "from_open_time": frm, "to_open_time": to,
                "missing_bars": (to - frm) // step + 1, "state": state, "detected_at": detected,
                "repaired_at": repaired_at, "updated_at": now}  # fmt: skip

    # --- the machine --------------------------------------------------------------------
    def apply(self, c: Candle, state: StreamState) -> list[dict[str, Any]]:
        """One kline (a single-kline record)."""
        return self.apply_many([c], state)

    def apply_many(self, cs: Sequence[Candle], state: StreamState) -> list[dict[str, Any]]:
        """The klines of one record, all of one stream, in order. A batch (more than one) is
        applied exactly as one by one, except that consecutive new candles share one ``append``
        and ``partial_close`` is sent only for a candle the stream showed in progress."""
        if not cs:
            return []
        c0 = cs[0]
        meta = self._meta(c0, state)
        step = interval_ms(c0.interval)
        known = KnownCandles(state, meta, step)
        first, last = meta["first"], meta["last"]
        stored: dict[int, Known] = {}
        torn = set(meta.get("torn") or ())
        if first is not None:
            # one round trip for every closed candle in the recorded span the state forgot
            ask = sorted({c.open_time for c in cs if c.is_closed and first <= c.open_time <= last
                          and c.open_time not in torn and known.get(c.open_time) is None})  # fmt: skip
            if ask:
                stored = self.lookup.closed_candles(c0.symbol, c0.interval, ask)
        if torn:
            # stored by a batch whose events were never stored: the record's version before it
            # decides, and the candle is announced again (with the seq it had)
            ask = sorted({c.open_time for c in cs if c.is_closed and c.open_time in torn})
            if ask:
                stored.update(self.lookup.closed_candles(c0.symbol, c0.interval, ask, meta["torn_seq"]))
        b = _Batch(known, stored, self.clock_ms(), step, len(cs) > 1)
        for c in cs:
            if c.is_closed:
                self._closed(c, meta, b)
            else:
                self._partial(c, meta, b)
        known.flush()
        if torn:
            done = {c.open_time for c in cs if c.is_closed}
            meta["torn"] = [t for t in meta["torn"] if t not in done]
        state.set(META, meta)
        for row in b.rows.values():
            row["seq"] = meta["seq"]  # the batch's last event: stored in the same events insert
            b.out.append(row)
        return b.out

    def _partial(self, c: Candle, meta: dict[str, Any], b: _Batch) -> None:
        last = meta["last"]
        if last is not None and c.open_time <= last:
            return  # the candle already closed: a stale in-progress update
        fp = [c.open_time, *fingerprint(c)]
        if meta.get("partial") == fp:
            return
        meta["partial"] = fp
        b.out.append(self._event(c, meta, b.now, {"type": "partial_update", "candle": candle_out(c)}))

    def _closed(self, c: Candle, meta: dict[str, Any], b: _Batch) -> None:
        t = c.open_time
        bucket_no = t // b.known.span
        bucket = b.known.bucket(bucket_no)
        ts = str(t)
        k = bucket.get(ts)
        known = b.stored.get(t) if k is None else (k[0], k[1])
        fp = fingerprint(c)
        if known is not None and known[0] == fp:
            return  # identical duplicate: changes nothing, emits nothing
        b.known.dirty.add(bucket_no)
        if known is not None:
            revision = known[1] + 1
            bucket[ts] = [fp, revision]
            prev = known[0]
            b.out.append(self._event(c, meta, b.now, {
                "type": "repair", "candle": candle_out(c, revision), "revision": revision,
                "source": c.source,
                "previous": {"open": prev[0], "high": prev[1], "low": prev[2], "close": prev[3],
                             "volume": prev[4]},
            }))  # fmt: skip
            return

        bucket[ts] = [fp, 0]
        step, now = b.step, b.now
        first, last = meta["first"], meta["last"]
        partial = meta.get("partial")
        shown = partial is not None and partial[0] == t
        if partial is not None and partial[0] <= t:
            meta["partial"] = None
        if last is None or t > last:
            if last is None:
                meta["first"] = t
            elif t > last + step:
                self._open_gap(c, meta, b, last + step, t - step)
            meta["last"] = t
            if shown or not b.batch:
                b.out.append(self._event(c, meta, now, self._partial_close(c, now)))
            self._append(c, meta, b, late=False)
        elif t < first:
            if t < first - step:
                self._open_gap(c, meta, b, t + step, first - step)
            meta["first"] = t
            self._append(c, meta, b, late=True)
        else:
            self._append(c, meta, b, late=True)
            self._fill(c, meta, b)

    def _append(self, c: Candle, meta: dict[str, Any], b: _Batch, *, late: bool) -> None:
        """``append`` of ``c``; joins the previous event when that is an append of the same kind."""
        co = candle_out(c)
        prev = b.out[-1] if b.out else None
        if (
            prev is not None
            and prev["type"] == "append"
            and prev["late"] == late
            and prev["count"] < MAX_APPEND
        ):
            prev["candles"].append(co)
            prev["count"] += 1
            return
        b.out.append(
            self._event(c, meta, b.now, {"type": "append", "count": 1, "candles": [co], "late": late})
        )

    def _open_gap(self, c: Candle, meta: dict[str, Any], b: _Batch, frm: int, to: int) -> None:
        """A new segment for the missing bars ``frm .. to``: gap_detected and its row."""
        seg = [frm, frm, to, b.now, to]
        self._add_segment(meta, seg)
        b.out.append(self._event(c, meta, b.now, {
            "type": "gap_detected", "segment_id": frm, "from_open_time": frm, "to_open_time": to,
            "missing_bars": (to - frm) // b.step + 1,
        }))  # fmt: skip
        b.rows[frm] = self._segment_row(c, seg, "open", b.now, b.step)

    def _partial_close(self, c: Candle, now: int) -> dict[str, Any]:
        return {"type": "partial_close", "candle": candle_out(c), "latency_ms": max(0, now - c.close_time)}

    @staticmethod
    def _add_segment(meta: dict[str, Any], seg: list[int]) -> None:
        segs: list[list[int]] = meta["segs"]
        # a replay after a sink write cut short re-detects a segment the record already holds
        segs[:] = [s for s in segs if s[0] != seg[0]]
        bisect.insort(segs, seg, key=lambda s: s[1])

    def _fill(self, c: Candle, meta: dict[str, Any], b: _Batch) -> None:
        """A late candle at ``c.open_time`` fills its slot in the open segment holding it."""
        segs: list[list[int]] = meta["segs"]
        t, step, now = c.open_time, b.step, b.now
        i = bisect.bisect_right(segs, t, key=lambda s: s[1]) - 1
        if i < 0 or not (segs[i][1] <= t <= segs[i][2]):
            return  # a slot no segment covers (e.g. bulk-loaded history): nothing to close
        sid, frm, to, detected, end = segs[i]
        if frm == to:
            del segs[i]
            row = self._segment_row(c, [sid, frm, to, detected, end], "repaired", now, step, now)
            row["missing_bars"] = 0
            b.rows[sid] = row
            b.out.append(self._event(c, meta, now, {
                "type": "gap_repaired", "segment_id": sid, "from_open_time": sid,
                "to_open_time": end, "missing_bars": (end - sid) // step + 1,
                "detected_at": detected, "repaired_at": now,
            }))  # fmt: skip
            return
        if t == frm:
            segs[i] = [sid, frm + step, to, detected, end]
            b.rows[sid] = self._segment_row(c, segs[i], "open", now, step)
        elif t == to:
            segs[i] = [sid, frm, to - step, detected, end]
            b.rows[sid] = self._segment_row(c, segs[i], "open", now, step)
        else:
            # the left piece keeps the id and answers for [id, t] (the bar just filled too, so
            # the gap_repaired ranges of the pieces tile the detected range); the right piece is
            # a new segment answering for [t + step, end]
            left = [sid, frm, t - step, detected, t]
            right = [t + step, t + step, to, detected, end]
            segs[i] = left
            segs.insert(i + 1, right)
            b.rows[sid] = self._segment_row(c, left, "open", now, step)
            b.rows[t + step] = self._segment_row(c, right, "open", now, step)
