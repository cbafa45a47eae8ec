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
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
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


class Lookup(Protocol):
    """The durable record, for what the state does not hold (ClickHouse in production)."""

    def seed(self, symbol: str, interval: str) -> dict[str, Any]:
        """``{"first_closed", "last_closed", "seq", "segments": [[id, from, to, detected_at, end]]}``

        A segment answers for the bars ``id .. end``; ``from .. to`` is what is still missing.
        """
        ...

    def closed_candle(self, symbol: str, interval: str, open_time: int) -> Known | None: ...


def fingerprint(c: Candle) -> list[Any]:
    return [c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades,
            c.taker_buy_base, c.taker_buy_quote, c.bars]  # fmt: skip


def _ckey(open_time: int) -> str:
    """State key of a closed candle; its value is ``[fingerprint, revision, generation]``."""
    return f"c{open_time}"


class CandleStateMachine:
    """Applies one candle at a time to a stream's state; see the module docstring."""

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
                # the state's): a candle it remembers may have changed since, so every candle
                # remembered before now is checked against the record once (see _known)
                meta["gen"] = int(meta.get("gen") or 0) + 1
            meta.update(
                first=seed.get("first_closed"),
                last=seed.get("last_closed"),
                seq=max(int(seed.get("seq") or 0), int(meta.get("seq") or 0)),
                segs=[list(s) for s in seed.get("segments", [])],
            )
            meta.setdefault("partial", None)
            state.set(META, meta)
            self.seeded.add(c.key)
            return meta
        return current

    def _known(self, c: Candle, state: StreamState, meta: dict[str, Any]) -> Known | None:
        k = state.get(_ckey(c.open_time))
        gen = int(meta.get("gen") or 0)
        if k is not None and (k[2] if len(k) > 2 else 0) == gen:
            return (k[0], int(k[1]))
        first, last = meta.get("first"), meta.get("last")
        stored = None
        if first is not None and last is not None and first <= c.open_time <= last:
            stored = self.lookup.closed_candle(c.symbol, c.interval, c.open_time)
        if k is None:
            return stored
        # remembered before the state was found behind the record: the record decides
        known = stored if stored is not None else (k[0], int(k[1]))
        state.set(_ckey(c.open_time), [known[0], known[1], gen])
        return known

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
        now = self.clock_ms()
        meta = self._meta(c, state)
        out: list[dict[str, Any]] = []
        last = meta["last"]
        if not c.is_closed:
            if last is not None and c.open_time <= last:
                return out  # the candle already closed: a stale in-progress update
            fp = [c.open_time, *fingerprint(c)]
            if meta.get("partial") == fp:
                return out
            meta["partial"] = fp
            out.append(self._event(c, meta, now, {"type": "partial_update", "candle": candle_out(c)}))
            state.set(META, meta)
            return out

        known = self._known(c, state, meta)
        fp = fingerprint(c)
        if known is not None:
            if known[0] == fp:
                return out  # identical duplicate: changes nothing, emits nothing
            revision = known[1] + 1
            state.set(_ckey(c.open_time), [fp, revision, int(meta.get("gen") or 0)])
            prev = known[0]
            out.append(self._event(c, meta, now, {
                "type": "repair", "candle": candle_out(c, revision), "revision": revision,
                "source": c.source,
                "previous": {"open": prev[0], "high": prev[1], "low": prev[2], "close": prev[3],
                             "volume": prev[4]},
            }))  # fmt: skip
            state.set(META, meta)
            return out

        step = interval_ms(c.interval)
        t = c.open_time
        first = meta["first"]
        state.set(_ckey(t), [fp, 0, int(meta.get("gen") or 0)])
        append = {"type": "append", "count": 1, "candles": [candle_out(c)], "late": False}
        if last is None:
            meta["first"] = meta["last"] = t
            out.append(self._event(c, meta, now, self._partial_close(c, now)))
            out.append(self._event(c, meta, now, append))
        elif t > last:
            if t > last + step:
                out.extend(self._open_gap(c, meta, now, step, last + step, t - step))
            meta["last"] = t
            if meta.get("partial") and meta["partial"][0] <= t:
                meta["partial"] = None
            out.append(self._event(c, meta, now, self._partial_close(c, now)))
            out.append(self._event(c, meta, now, append))
        else:
            append["late"] = True
            if t < first:
                if t < first - step:
                    out.extend(self._open_gap(c, meta, now, step, t + step, first - step))
                meta["first"] = t
                out.append(self._event(c, meta, now, append))
            else:
                out.append(self._event(c, meta, now, append))
                out.extend(self._fill(c, meta, now, step))
        state.set(META, meta)
        return out

    def _open_gap(
        self, c: Candle, meta: dict[str, Any], now: int, step: int, frm: int, to: int
    ) -> list[dict[str, Any]]:
        """A new segment for the missing bars ``frm .. to``: gap_detected and its row."""
        seg = [frm, frm, to, now, to]
        self._add_segment(meta, seg)
        event = self._event(c, meta, now, {
            "type": "gap_detected", "segment_id": frm, "from_open_time": frm, "to_open_time": to,
            "missing_bars": (to - frm) // step + 1,
        })  # fmt: skip
        return [event, self._segment_row(c, seg, "open", now, step)]

    def _partial_close(self, c: Candle, now: int) -> dict[str, Any]:
        return {"type": "partial_close", "candle": candle_out(c), "latency_ms": max(0, now - c.close_time)}

    @staticmethod
    def _add_segment(meta: dict[str, Any], seg: list[int]) -> None:
        segs: list[list[int]] = meta["segs"]
        # a replay after a sink write cut short re-detects a segment the record already holds
        segs[:] = [s for s in segs if s[0] != seg[0]]
        bisect.insort(segs, seg, key=lambda s: s[1])

    def _fill(self, c: Candle, meta: dict[str, Any], now: int, step: int) -> list[dict[str, Any]]:
        """A late candle at ``c.open_time`` fills its slot in the open segment holding it."""
        segs: list[list[int]] = meta["segs"]
        t = c.open_time
        i = bisect.bisect_right([s[1] for s in segs], t) - 1
        if i < 0 or not (segs[i][1] <= t <= segs[i][2]):
            return []  # a slot no segment covers (e.g. bulk-loaded history): nothing to close
        sid, frm, to, detected, end = segs[i]
        out: list[dict[str, Any]] = []
        if frm == to:
            del segs[i]
            row = self._segment_row(c, [sid, frm, to, detected, end], "repaired", now, step, now)
            row["missing_bars"] = 0
            out.append(row)
            out.append(self._event(c, meta, now, {
                "type": "gap_repaired", "segment_id": sid, "from_open_time": sid,
                "to_open_time": end, "missing_bars": (end - sid) // step + 1,
                "detected_at": detected, "repaired_at": now,
            }))  # fmt: skip
            return out
        if t == frm:
            segs[i] = [sid, frm + step, to, detected, end]
            out.append(self._segment_row(c, segs[i], "open", now, step))
        elif t == to:
            segs[i] = [sid, frm, to - step, detected, end]
            out.append(self._segment_row(c, segs[i], "open", now, step))
        else:
            # the left piece keeps the id and answers for [id, t] (the bar just filled too, so
            # the gap_repaired ranges of the pieces tile the detected range); the right piece is
            # a new segment answering for [t + step, end]
            left = [sid, frm, t - step, detected, t]
            right = [t + step, t + step, to, detected, end]
            segs[i] = left
            segs.insert(i + 1, right)
            out.append(self._segment_row(c, left, "open", now, step))
            out.append(self._segment_row(c, right, "open", now, step))
        return out
