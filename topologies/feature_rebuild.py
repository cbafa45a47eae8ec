"""Feature rows for stored candles that have none, or stale ones: ``ohlcv features rebuild``.

History bulk-loaded straight into ClickHouse (``ohlcv import`` without replay, the demo's
history) never passes through the topology, so it has no feature rows, and the features state
of its stream re-seeds from nothing. The rebuild derives them with the streaming code's own
maths (``topologies.feature_logic``) from the stored closed candles (``ohlcv_candles`` FINAL):

- It starts at the first bar of the run (no hole before it) that holds ``start_ms``, or at the
  stream's first stored bar, where the recursive features seed; the rows before ``start_ms``
  are derived but never written. Rows are then exact, as the streaming ones.
- It reads and derives ``chunk_bars`` candles at a time (memory stays flat over years).
- It writes only rows that are missing or differ from the stored row (features, window flags,
  bar values and carry; 1e-12 relative), with ``feature_version`` = the stored one + 1 (1 when
  there is none), ``reason`` ``rebuild`` and ``event_seq`` 0. A second run writes nothing.
- A bar counts as repaired (``window_has_repair`` of the rows around it) when the stored
  candle is a revision (``revision > 0``) or its stored row says so (a late fill).

It never touches the running topology's state; the topology reads these rows when it next
re-seeds (its first event of the stream in a process). Run it before live candles of a
bulk-loaded stream arrive, or restart the features topology after it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from indicators.definitions import FEATURE_NAMES, ROW_FLAGS
from schemas.features import BAR_COLUMNS, NEWS_COLUMNS
from schemas.intervals import interval_ms
from schemas.klines import Candle
from sinks.features import write_features
from topologies.feature_logic import CandleKind, FeatureStream, MemoryState
from topologies.news_features import NewsBook

DEFAULT_CHUNK_BARS = 50_000
REL = 1e-12

#: the compared values of a row, in this order
_COMPARED = (*FEATURE_NAMES, *NEWS_COLUMNS, *ROW_FLAGS, *BAR_COLUMNS, "bar_repaired")

SQL_SPAN = (
    "SELECT toUnixTimestamp64Milli(min(open_time)), toUnixTimestamp64Milli(max(open_time)), count() "
    "FROM (SELECT DISTINCT open_time FROM ohlcv_candles WHERE symbol = {s:String} AND interval = {i:String} "
    "AND is_closed AND open_time >= fromUnixTimestamp64Milli({a:Int64}) "
    "AND open_time < fromUnixTimestamp64Milli({b:Int64}))"
)
# the newest bar at or before ``t`` whose previous stored bar is not one step before it
SQL_RUN_START = (
    "SELECT max(t) FROM ("
    " SELECT t, t - lagInFrame(t, 1, -1) OVER (ORDER BY t ASC ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS d"
    " FROM (SELECT DISTINCT toUnixTimestamp64Milli(open_time) AS t FROM ohlcv_candles"
    "  WHERE symbol = {s:String} AND interval = {i:String} AND is_closed"
    "  AND open_time <= fromUnixTimestamp64Milli({t:Int64}))"
    ") WHERE d != {step:Int64}"
)
SQL_CANDLES = (
    "SELECT toUnixTimestamp64Milli(open_time), open, high, low, close, volume, revision "
    "FROM ohlcv_candles FINAL WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
    "AND open_time > fromUnixTimestamp64Milli({a:Int64}) AND open_time < fromUnixTimestamp64Milli({b:Int64}) "
    "ORDER BY open_time ASC LIMIT {n:UInt32}"
)
# the column names are the constant _COMPARED, never input
SQL_STORED = (
    "SELECT toUnixTimestamp64Milli(open_time), feature_version, carry, "  # noqa: S608
    + ", ".join(f"`{c}`" for c in _COMPARED)
    + " FROM feature_snapshots FINAL WHERE symbol = {s:String} AND interval = {i:String} "
    "AND open_time >= fromUnixTimestamp64Milli({a:Int64}) "
    "AND open_time <= fromUnixTimestamp64Milli({b:Int64})"
)

#: called with (bars derived so far, bars to derive)
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class RebuildResult:
    symbol: str
    interval: str
    from_open_time: int | None  #: the first bar written or compared (>= start_ms)
    to_open_time: int | None  #: the last
    derived_from: int | None  #: the first bar derived (the run start at or before it)
    derived: int  #: bars derived, the run's lead-in included
    in_range: int  #: bars in [start_ms, end_ms)
    written: int  #: rows written (missing or different)
    missing: int  #: of them, bars that had no row
    seconds: float
    newer_may_be_stale: bool  #: rows were written and the run continues past end_ms: rebuild on

    def to_json(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol, "interval": self.interval, "from_open_time": self.from_open_time,
            "to_open_time": self.to_open_time, "derived_from": self.derived_from, "derived": self.derived,
            "in_range": self.in_range, "written": self.written, "missing": self.missing,
            "unchanged": self.in_range - self.written, "seconds": round(self.seconds, 3),
            "newer_may_be_stale": self.newer_may_be_stale,
        }  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool) or (isinstance(a, int) and isinstance(b, int)):
        return bool(a == b)
    return math.isclose(float(a), float(b), rel_tol=REL, abs_tol=0.0) or (math.isnan(a) and math.isnan(b))


def _unchanged(row: dict[str, Any], stored: Sequence[Any]) -> bool:
    carry = stored[2]
    if len(carry) != len(row["carry"]) or not all(map(_same, row["carry"], carry)):
        return False
    return all(_same(row[name], v) for name, v in zip(_COMPARED, stored[3:], strict=True))


def rebuild_features(
    client: Client,
    symbol: str,
    interval: str,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    chunk_bars: int = DEFAULT_CHUNK_BARS,
    progress: Progress | None = None,
    news: NewsBook | None = None,
) -> RebuildResult:
    """Derive and write the feature rows of one stream's stored candles in ``[start_ms,
    end_ms)`` (None: the stored edge), as the module says. Their news columns come from
    ``news`` (None: every story stored in ``news_articles``; ``topologies.news_features``)."""
    t0 = time.perf_counter()
    step = interval_ms(interval)
    p = {"s": symbol, "i": interval}
    lo = 0 if start_ms is None else start_ms
    hi = 2**62 if end_ms is None else end_ms
    first, last, in_range = client.query(SQL_SPAN, parameters={**p, "a": lo, "b": hi}).result_rows[0]
    if not in_range:
        return RebuildResult(symbol, interval, None, None, None, 0, 0, 0, 0, time.perf_counter() - t0, False)
    first, last = int(first), int(last)
    begin = first
    if start_ms is not None:
        found = client.query(SQL_RUN_START, parameters={**p, "t": first, "step": step}).result_rows
        if found and found[0][0] is not None:
            begin = min(first, int(found[0][0]))
    (_, _, total), *_ = client.query(SQL_SPAN, parameters={**p, "a": begin, "b": last + 1}).result_rows
    total = int(total)
    stream = FeatureStream()
    state = MemoryState()
    if news is None:
        news = NewsBook()
        news.seed(client)
    now_ms = int(time.time() * 1000)
    cursor, derived, written, missing = begin - 1, 0, 0, 0
    while cursor < last:
        rows = client.query(
            SQL_CANDLES, parameters={**p, "a": cursor, "b": last + 1, "n": chunk_bars}
        ).result_rows
        if not rows:
            break
        a, b = int(rows[0][0]), int(rows[-1][0])
        cursor = b
        stored = {
            int(r[0]): r for r in client.query(SQL_STORED, parameters={**p, "a": a, "b": b}).result_rows
        }
        candles: list[Candle] = []
        kinds: list[CandleKind] = []
        for ot, o, h, low, c, v, revision in rows:
            t = int(ot)
            old = stored.get(t)
            repaired = int(revision) > 0 or (old is not None and bool(old[-1]))
            candles.append(
                Candle(symbol, interval, t, t + step - 1, o, h, low, c, v, None, None, None, None, True)
            )
            kinds.append("repair" if repaired else "new")
        derived_rows = stream.apply_many(candles, kinds, state)
        if not isinstance(derived_rows, list):  # in-order new bars never reach behind the state
            raise RuntimeError(f"feature rebuild of {symbol} {interval}: bars out of order at {a}")
        news.annotate(derived_rows)
        out = []
        for row in derived_rows:
            t = row["open_time"]
            if t < first:
                continue  # the run's lead-in before start_ms: derived, not written
            old = stored.get(t)
            if old is not None and _unchanged(row, old):
                continue
            row["feature_version"] = 1 if old is None else int(old[1]) + 1
            row["reason"] = "rebuild"
            row["event_seq"] = 0
            row["emitted_at"] = now_ms
            missing += old is None
            out.append(row)
        write_features(client, out)
        written += len(out)
        derived += len(rows)
        if progress is not None:
            progress(derived, total)
    stale = False
    if written and end_ms is not None:  # EMA/Wilder carry a changed row forward through its run
        nxt = client.query(SQL_SPAN, parameters={**p, "a": last + step, "b": last + 2 * step}).result_rows[0]
        stale = bool(nxt[2])
    return RebuildResult(
        symbol, interval, first, last, begin, derived, int(in_range), written, missing,
        time.perf_counter() - t0, stale,
    )  # fmt: skip
