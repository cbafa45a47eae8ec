"""Resampling closed 1m candles into higher intervals, in per-symbol state.

The resampler reads the candle events topic (``append`` and ``repair`` of 1m candles, keyed
``SYMBOL:1m``) and keeps, in that key's Quix state, the 1m bars of every bucket it is building
plus a count per (interval, bucket). A higher candle is emitted — as a closed raw kline with
``source="resample"`` and ``bars`` = how many 1m bars built it, keyed ``SYMBOL:5m`` etc. — when

- its bucket is complete (all 1m bars present), or
- a 1m bar of a later time arrived (the bucket is over; it is emitted with the bars it has), or
- it was emitted before and one of its 1m bars was added or repaired (re-emitted).

Re-emissions go back through the raw topic into the candle topology, which turns a changed
higher candle into a ``repair`` (and a late-completed one into a gap fill) exactly as for
exchange candles. Buckets are loaded from ClickHouse on first touch in a process, so a restart
never emits a higher candle from a partial view.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from schemas.events import stored_candles
from schemas.intervals import bucket_start, interval_ms
from schemas.klines import Candle
from topologies.state_cache import StreamView

MINUTE_MS = 60_000

#: one 1m bar in state: open, high, low, close, volume, quote_volume, trades, taker_base, taker_quote
Bar = list[Any]


class BarSource(Protocol):
    def bars_between(self, symbol: str, start_ms: int, end_ms: int) -> dict[int, Bar]:
        """Stored closed 1m bars with ``start_ms <= open_time < end_ms``."""
        ...

    def last_stored(self, symbol: str) -> int:
        """Open time of the newest stored closed 1m bar (-1 when none)."""
        ...


class StreamState(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...


def bar_of(c: dict[str, Any]) -> Bar:
    return [c["open"], c["high"], c["low"], c["close"], c["volume"], c.get("quote_volume"),
            c.get("trades"), c.get("taker_buy_base"), c.get("taker_buy_quote")]  # fmt: skip


def _sum(values: list[Any]) -> Any:
    return None if any(v is None for v in values) else sum(values)


def aggregate(symbol: str, interval: str, start: int, bars: list[tuple[int, Bar]], now_ms: int) -> Candle:
    """The ``interval`` candle of ``bars`` (ascending by open time, at least one)."""
    step = interval_ms(interval)
    return Candle(
        symbol=symbol,
        interval=interval,
        open_time=start,
        close_time=start + step - 1,
        open=bars[0][1][0],
        high=max(b[1][1] for b in bars),
        low=min(b[1][2] for b in bars),
        close=bars[-1][1][3],
        volume=sum(b[1][4] for b in bars),
        quote_volume=_sum([b[1][5] for b in bars]),
        trades=_sum([b[1][6] for b in bars]),
        taker_buy_base=_sum([b[1][7] for b in bars]),
        taker_buy_quote=_sum([b[1][8] for b in bars]),
        is_closed=True,
        source="resample",
        bars=len(bars),
        event_time=now_ms,
        received_at=now_ms,
    )


class Resampler:
    def __init__(self, intervals: list[str], source: BarSource, clock_ms: Callable[[], int] | None = None):
        self.intervals = sorted(intervals, key=interval_ms)
        self.source = source
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._loaded: set[tuple[str, str, int]] = set()
        #: per symbol, the newest stored 1m open time when this process first saw the symbol
        self._stored_until: dict[str, int] = {}

    def _ensure_loaded(self, symbol: str, interval: str, start: int, state: StreamState) -> None:
        """Make the state hold every stored 1m bar of a bucket, once per bucket and process.

        Buckets that start after everything stored when the process began need no query: the
        durable record has nothing there the state could lack.
        """
        if (symbol, interval, start) in self._loaded:
            return
        if symbol not in self._stored_until:
            self._stored_until[symbol] = self.source.last_stored(symbol)
        if start > self._stored_until[symbol]:
            return
        step = interval_ms(interval)
        stored = self.source.bars_between(symbol, start, start + step)
        n = 0
        for t in range(start, start + step, MINUTE_MS):
            # the record wins: the state may be behind it (see candle_logic), never ahead
            if t in stored:
                state.set(f"b{t}", stored[t])
            if state.get(f"b{t}") is not None:
                n += 1
        state.set(f"n{interval}:{start}", n)
        self._loaded.add((symbol, interval, start))

    def _bars(self, interval: str, start: int, state: StreamState) -> list[tuple[int, Bar]]:
        step = interval_ms(interval)
        out = []
        for t in range(start, start + step, MINUTE_MS):
            b = state.get(f"b{t}")
            if b is not None:
                out.append((t, b))
        return out

    def _emit(self, symbol: str, interval: str, start: int, state: StreamState, now: int) -> Candle:
        state.set(f"e{interval}:{start}", True)
        return aggregate(symbol, interval, start, self._bars(interval, start, state), now)

    def apply_many(self, symbol: str, candles: list[dict[str, Any]], state: StreamState) -> list[Candle]:
        """``apply`` of each candle in order, through one decoded view of the state (a batch
        record's candles cost one read and one write per state key, not one per candle). The
        topology's checkpoint-scoped view (``topologies.state_cache``) is used as it is."""
        view = state if isinstance(state, StreamView) else StreamView(state)
        out: list[Candle] = []
        for c in candles:
            out.extend(self.apply(symbol, c, view))
        if view is not state:
            view.write()
        return out

    def apply(self, symbol: str, candle: dict[str, Any], state: StreamState) -> list[Candle]:
        """One closed 1m candle (CandleOut dict, new or repaired) -> the higher candles to send."""
        now = self.clock_ms()
        t = int(candle["open_time"])
        out: list[Candle] = []
        spans = [(iv, interval_ms(iv), bucket_start(t, iv)) for iv in self.intervals]
        for iv, _, start in spans:
            self._ensure_loaded(symbol, iv, start, state)
        last = state.get("last")
        if self._stored_until.get(symbol, -1) > (-1 if last is None else last):
            # a state lost or behind the record: the newest stored bar is the newest seen
            last = self._stored_until[symbol]
        bar_key = f"b{t}"
        # Keys past the newest bar seen (the state's or the record's) were never written: a bar
        # is stored with "last" in the same step, a bucket's count and emitted mark only once a
        # bar of it is, and buckets loaded from the record end at its newest bar. Not asking the
        # state for them saves a store lookup (a miss costs as much as a hit) per key and bar.
        is_new = last is None or t > last or state.get(bar_key) is None
        state.set(bar_key, bar_of(candle))
        for iv, step, start in spans:
            count_key = f"n{iv}:{start}"
            unseen = last is None or start > bucket_start(last, iv)
            n = (0 if unseen else int(state.get(count_key) or 0)) + (1 if is_new else 0)
            state.set(count_key, n)
            # the bucket of the previous newest bar is over once a later bucket starts
            if last is not None and t > last:
                prev = bucket_start(last, iv)
                if prev < start and not state.get(f"e{iv}:{prev}"):
                    self._ensure_loaded(symbol, iv, prev, state)
                    if int(state.get(f"n{iv}:{prev}") or 0) > 0:
                        out.append(self._emit(symbol, iv, prev, state, now))
            over = last is not None and start + step <= max(last, t)
            if n == step // MINUTE_MS or over or (not unseen and state.get(f"e{iv}:{start}")):
                out.append(self._emit(symbol, iv, start, state, now))
        if last is None or t > last:
            state.set("last", t)
        return out


def candles_of_event(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The closed candles an event stores (those of an append or a repair)."""
    return [c for c in stored_candles(event) if c["is_closed"]]
