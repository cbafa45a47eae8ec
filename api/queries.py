"""Every ClickHouse query the API runs, and the small client pool they run on.

Rules: clickhouse-connect only; explicit columns; values are bound parameters (``{name:Type}``),
never interpolated; times cross the boundary as ms since epoch (``toUnixTimestamp64Milli`` out,
``fromUnixTimestamp64Milli`` in). Reads that must be exact use ``FINAL`` (``ohlcv_candles`` and
``gap_segments`` are ReplacingMergeTrees that may hold a replayed or superseded row until a
merge); counts of closed candles use ``uniqExact(open_time)`` instead, which is exact without
FINAL because a closed candle never becomes partial again.

The methods are synchronous (clickhouse-connect is): REST routes are plain ``def`` and run in
the threadpool, the WebSocket calls them through ``anyio.to_thread``. Any driver failure is
raised as ``StoreUnavailableError`` naming the query, which the app answers with HTTP 503.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from api.errors import StoreUnavailableError
from api.recent_book import BOOK_ROWS
from ohlcv.errors import ClickHouseUnavailableError
from streams.backfill import BackfillError, SegmentLifecycle, segment_lifecycles
from streams.continuity import (
    WAITING_STATES,
    ContinuityError,
    ContinuityReport,
    ScanRangeError,
    iso_ms,
    scan,
)

logger = logging.getLogger(__name__)

#: effective gap segment states that still miss bars
OPEN_GAP_STATES: tuple[str, ...] = (*WAITING_STATES, "exchange_gap")


@dataclass(frozen=True, slots=True)
class GapCounts:
    """Segments still missing bars: ``waiting`` for a repair (``failed`` of them after a failed
    one) and confirmed ``exchange`` outages, each with its missing bars."""

    waiting: int
    waiting_bars: int
    failed: int
    exchange: int
    exchange_bars: int


# Every statement is one literal: nothing is ever interpolated into SQL. The candle columns
# (``candle_dict`` reads them by position) are the first 15 of each candle SELECT.
_N_CANDLE_COLUMNS = 15
SQL_RECENT = (
    "SELECT toUnixTimestamp64Milli(open_time) AS open_ms, toUnixTimestamp64Milli(close_time) AS close_ms, "
    "open, high, low, close, volume, quote_volume, trades, taker_buy_base, taker_buy_quote, "
    "is_closed, source, revision, bars "
    "FROM ohlcv_candles FINAL WHERE symbol = {s:String} AND interval = {i:String} "
    "AND (is_closed OR {include_open:Bool}) ORDER BY open_time DESC LIMIT {n:UInt32}"
)
SQL_HISTORY_LATEST = (
    "SELECT toUnixTimestamp64Milli(open_time) AS open_ms, toUnixTimestamp64Milli(close_time) AS close_ms, "
    "open, high, low, close, volume, quote_volume, trades, taker_buy_base, taker_buy_quote, "
    "is_closed, source, revision, bars "
    "FROM ohlcv_candles FINAL WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
    "ORDER BY open_time DESC LIMIT {n:UInt32}"
)
SQL_HISTORY_BEFORE = (
    "SELECT toUnixTimestamp64Milli(open_time) AS open_ms, toUnixTimestamp64Milli(close_time) AS close_ms, "
    "open, high, low, close, volume, quote_volume, trades, taker_buy_base, taker_buy_quote, "
    "is_closed, source, revision, bars "
    "FROM ohlcv_candles FINAL WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
    "AND open_time < fromUnixTimestamp64Milli({b:Int64}) ORDER BY open_time DESC LIMIT {n:UInt32}"
)
SQL_HISTORY_AFTER = (
    "SELECT toUnixTimestamp64Milli(open_time) AS open_ms, toUnixTimestamp64Milli(close_time) AS close_ms, "
    "open, high, low, close, volume, quote_volume, trades, taker_buy_base, taker_buy_quote, "
    "is_closed, source, revision, bars "
    "FROM ohlcv_candles FINAL WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
    "AND open_time > fromUnixTimestamp64Milli({a:Int64}) ORDER BY open_time ASC LIMIT {n:UInt32}"
)
# span and count over every closed candle; completeness and the largest gap over the newest k,
# with the neighbour difference computed by a window function. Counts are exact before a merge
# (duplicates of a candle count once): uniqExact(open_time), and count() over DISTINCT open times
SQL_META = (
    "SELECT a.first_ms, a.last_ms, a.n, b.n, b.expected, b.max_missing, b.lo, b.hi FROM ("
    " SELECT toUnixTimestamp64Milli(min(open_time)) AS first_ms, "
    "  toUnixTimestamp64Milli(max(open_time)) AS last_ms, uniqExact(open_time) AS n "
    " FROM ohlcv_candles WHERE symbol = {s:String} AND interval = {i:String} AND is_closed"
    ") AS a CROSS JOIN ("
    " SELECT count() AS n, if(n = 0, 0, intDiv(max(t) - min(t), {step:Int64}) + 1) AS expected, "
    "  if(n = 0, 0, greatest(intDiv(max(d), {step:Int64}) - 1, 0)) AS max_missing, "
    "  min(t) AS lo, max(t) AS hi "
    " FROM ("
    "  SELECT t, t - lagInFrame(t, 1, t) OVER (ORDER BY t ASC ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS d "
    "  FROM (SELECT DISTINCT toUnixTimestamp64Milli(open_time) AS t FROM ohlcv_candles "
    "   WHERE symbol = {s:String} AND interval = {i:String} AND is_closed ORDER BY t DESC LIMIT {k:UInt32})"
    " )"
    ") AS b"
)
SQL_DELTA_CANDLES = (
    "SELECT toUnixTimestamp64Milli(open_time) AS open_ms, toUnixTimestamp64Milli(close_time) AS close_ms, "
    "open, high, low, close, volume, quote_volume, trades, taker_buy_base, taker_buy_quote, "
    "is_closed, source, revision, bars "
    "FROM ohlcv_candles FINAL WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
    "AND open_time >= fromUnixTimestamp64Milli({a:Int64}) ORDER BY open_time ASC LIMIT {n:UInt32}"
)
# repairs are found on the raw rows first, then read under FINAL by key only
SQL_DELTA_REPAIRS = (
    "SELECT toUnixTimestamp64Milli(open_time) AS open_ms, toUnixTimestamp64Milli(close_time) AS close_ms, "
    "open, high, low, close, volume, quote_volume, trades, taker_buy_base, taker_buy_quote, "
    "is_closed, source, revision, bars "
    ", toUnixTimestamp64Milli(ingested_at) AS stored_ms "
    "FROM ohlcv_candles FINAL WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
    "AND revision > 0 AND ingested_at >= fromUnixTimestamp64Milli({t:Int64}) AND open_time IN ("
    " SELECT open_time FROM ohlcv_candles WHERE symbol = {s:String} AND interval = {i:String} "
    " AND revision > 0 AND ingested_at >= fromUnixTimestamp64Milli({t:Int64})"
    ") ORDER BY stored_ms ASC, open_ms ASC LIMIT {n:UInt32}"
)
SQL_SNAPSHOT_HEAD = (
    "SELECT max(seq), toUnixTimestamp64Milli(maxIf(open_time, type = 'append')), "
    "countIf(type = 'append') FROM ohlcv_events WHERE symbol = {s:String} AND interval = {i:String}"
)
SQL_SNAPSHOT_CANDLES = (
    "SELECT toUnixTimestamp64Milli(open_time) AS open_ms, toUnixTimestamp64Milli(close_time) AS close_ms, "
    "open, high, low, close, volume, quote_volume, trades, taker_buy_base, taker_buy_quote, "
    "is_closed, source, revision, bars "
    "FROM ohlcv_candles FINAL WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
    "AND ({uncapped:Bool} OR open_time <= fromUnixTimestamp64Milli({cap:Int64})) "
    "ORDER BY open_time DESC LIMIT {n:UInt32}"
)
SQL_SNAPSHOT_META = (
    "SELECT toUnixTimestamp64Milli(min(open_time)), toUnixTimestamp64Milli(max(open_time)), "
    "uniqExact(open_time) FROM ohlcv_candles WHERE symbol = {s:String} AND interval = {i:String} "
    "AND is_closed AND ({uncapped:Bool} OR open_time <= fromUnixTimestamp64Milli({cap:Int64}))"
)
SQL_MAX_SEQ = "SELECT max(seq) FROM ohlcv_events WHERE symbol = {s:String} AND interval = {i:String}"
SQL_EVENTS_COUNT = (
    "SELECT uniqExact(seq) FROM ohlcv_events WHERE symbol = {s:String} AND interval = {i:String} "
    "AND seq > {a:UInt64} AND seq <= {b:UInt64}"
)
SQL_EVENTS = (
    "SELECT seq, type, payload FROM ohlcv_events WHERE symbol = {s:String} AND interval = {i:String} "
    "AND seq > {a:UInt64} AND seq <= {b:UInt64} ORDER BY seq ASC LIMIT 1 BY seq LIMIT {n:UInt32}"
)
SQL_PING = "SELECT 1"
SQL_LAST_INGESTED = (
    "SELECT toUnixTimestamp64Milli(maxOrNull(ingested_at)) FROM ohlcv_candles "
    "WHERE symbol IN {syms:Array(String)} AND interval = {i:String} AND is_closed"
)
SQL_LAST_EMITTED = (
    "SELECT toUnixTimestamp64Milli(maxOrNull(emitted_at)) FROM ohlcv_events "
    "WHERE symbol IN {syms:Array(String)}"
)


@dataclass(frozen=True)
class Stream:
    """A served (symbol, interval) and its bar length."""

    symbol: str
    interval: str
    step_ms: int

    @property
    def key(self) -> str:
        return f"{self.symbol}:{self.interval}"

    def params(self, **extra: Any) -> dict[str, Any]:
        return {"s": self.symbol, "i": self.interval, **extra}


def candle_dict(r: Sequence[Any]) -> dict[str, Any]:
    """A ``CandleOut``-shaped dict from a row selected by one of the candle SELECTs below."""
    return {
        "open_time": int(r[0]),
        "close_time": int(r[1]),
        "open": r[2],
        "high": r[3],
        "low": r[4],
        "close": r[5],
        "volume": r[6],
        "quote_volume": r[7],
        "trades": None if r[8] is None else int(r[8]),
        "taker_buy_base": r[9],
        "taker_buy_quote": r[10],
        "is_closed": bool(r[11]),
        "source": r[12],
        "revision": int(r[13]),
        "bars": None if r[14] is None else int(r[14]),
    }


class ClientPool:
    """Up to ``size`` clients, each used by one thread at a time.

    One clickhouse-connect client must not run two queries at once (an HTTP client shares one
    session id; a chDB client serialises on its handle), so concurrent requests borrow
    distinct clients. Clients are created on demand, so the API starts while ClickHouse is
    down and answers 503 until it is back; a client whose query failed is dropped.
    """

    def __init__(self, factory: Callable[[], Client], size: int = 4, acquire_timeout_s: float = 10.0):
        self.factory = factory
        self.size = size
        self.acquire_timeout_s = acquire_timeout_s
        self._idle: queue.LifoQueue[Client] = queue.LifoQueue()
        self._created = 0
        self._lock = threading.Lock()

    def _create(self) -> Client:
        try:
            return self.factory()
        except ClickHouseUnavailableError as exc:
            raise StoreUnavailableError(str(exc)) from exc
        except Exception as exc:
            raise StoreUnavailableError(f"ClickHouse client could not be created: {exc}") from exc

    @contextlib.contextmanager
    def client(self) -> Iterator[Client]:
        try:
            c = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                create = self._created < self.size
                if create:
                    self._created += 1
            if create:
                try:
                    c = self._create()
                except BaseException:
                    with self._lock:
                        self._created -= 1
                    raise
            else:
                try:
                    c = self._idle.get(timeout=self.acquire_timeout_s)
                except queue.Empty:
                    raise StoreUnavailableError(
                        f"all {self.size} ClickHouse clients stayed busy for {self.acquire_timeout_s:.0f}s"
                    ) from None
        healthy = False
        try:
            yield c
            healthy = True
        finally:
            if healthy:
                self._idle.put(c)
            else:
                with self._lock:
                    self._created -= 1
                with contextlib.suppress(Exception):
                    c.close()

    def warm(self) -> None:
        """Open one client now, so the first request does not pay for it (failure is not fatal)."""
        try:
            with self.client():
                pass
        except StoreUnavailableError as exc:
            logger.warning("clickhouse not reachable at startup, requests answer 503 until it is: %s", exc)

    def close(self) -> None:
        while True:
            try:
                c = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                c.close()


@dataclass(frozen=True)
class SnapshotData:
    seq: int
    candles: list[dict[str, Any]]
    earliest_open_time: int | None
    latest_open_time: int | None
    count: int


def _unavailable(what: str, exc: Exception) -> StoreUnavailableError:
    """A failed query as the API reports it: the query's name and the first line of the error."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return StoreUnavailableError(f"ClickHouse query {what} failed: {first}")


def query_rows(pool: ClientPool, what: str, sql: str, params: dict[str, Any]) -> list[Sequence[Any]]:
    """The rows of one query on a pooled client; a driver failure as ``StoreUnavailableError``."""
    t0 = time.perf_counter()
    with pool.client() as client:
        try:
            rows = list(client.query(sql, parameters=params).result_rows)
        except Exception as exc:
            raise _unavailable(what, exc) from exc
    logger.debug("query=%s rows=%d ms=%.1f", what, len(rows), (time.perf_counter() - t0) * 1000)
    return rows


class CandleQueries:
    """The API's reads. ``what`` in errors names the query for the operator."""

    def __init__(self, pool: ClientPool):
        self.pool = pool

    def _rows(self, what: str, sql: str, params: dict[str, Any]) -> list[Sequence[Any]]:
        return query_rows(self.pool, what, sql, params)

    # --- candles ----------------------------------------------------------------------------
    def recent(self, st: Stream, limit: int, include_open: bool) -> list[dict[str, Any]]:
        rows = self._rows("recent", SQL_RECENT, st.params(include_open=include_open, n=limit))
        return [candle_dict(r) for r in reversed(rows)]

    def history(
        self, st: Stream, limit: int, before: int | None, after: int | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Closed candles of one page, ascending, and whether more exist beyond it."""
        if after is not None:
            rows = self._rows("history", SQL_HISTORY_AFTER, st.params(a=after, n=limit + 1))
            return [candle_dict(r) for r in rows[:limit]], len(rows) > limit
        if before is not None:
            rows = self._rows("history", SQL_HISTORY_BEFORE, st.params(b=before, n=limit + 1))
        else:
            rows = self._rows("history", SQL_HISTORY_LATEST, st.params(n=limit + 1))
        return [candle_dict(r) for r in reversed(rows[:limit])], len(rows) > limit

    def meta(self, st: Stream, sample: int) -> dict[str, Any]:
        """Span and count of closed candles; completeness and largest gap over the newest ``sample``
        (``span``: its oldest to its newest candle)."""
        first, last, count, n, expected, max_missing, lo, hi = self._rows(
            "meta", SQL_META, st.params(step=st.step_ms, k=sample)
        )[0]
        has = int(count) > 0
        ratio = (int(n) / int(expected)) if has and int(expected) > 0 else None
        a, b = (int(lo), int(hi)) if has else (None, None)
        return {
            "span": {
                "from_open_time": a,
                "to_open_time": b,
                "from_iso": None if a is None else iso_ms(a),
                "to_iso": None if b is None else iso_ms(b),
                "from_given": False,
                "to_given": False,
                "expected_bars": int(expected) if has else 0,
            },
            "earliest_open_time": int(first) if has else None,
            "latest_open_time": int(last) if has else None,
            "count": int(count),
            "sample_bars": int(n),
            "expected_bars": int(expected) if has else None,
            "completeness": None if ratio is None else min(1.0, ratio),
            "largest_gap_bars": int(max_missing),
        }

    def delta(
        self, st: Stream, since: int, limit: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
        """Closed candles from one interval before ``since``, and repairs stored since ``since``."""
        rows = self._rows("delta.candles", SQL_DELTA_CANDLES, st.params(a=since - st.step_ms, n=limit + 1))
        reps = self._rows("delta.repairs", SQL_DELTA_REPAIRS, st.params(t=since, n=limit + 1))
        candles = [candle_dict(r) for r in rows[:limit]]
        repairs = [
            {"open_time": int(r[0]), "candle": candle_dict(r), "repaired_at": int(r[_N_CANDLE_COLUMNS])}
            for r in reps[:limit]
        ]
        return candles, repairs, len(rows) > limit or len(reps) > limit

    # --- continuity -------------------------------------------------------------------------
    def last_scans(self) -> list[dict[str, Any]]:
        """The scheduled scan's newest result per stream and window (``continuity_scans``)."""
        cols = ("symbol", "interval", "window", "scanned_at", "span_from", "span_to", "expected_bars",
                "present_bars", "missing_bars", "gap_count", "largest_gap_bars", "completeness")  # fmt: skip
        times = {"scanned_at", "span_from", "span_to"}
        select = ", ".join(f"toUnixTimestamp64Milli({c})" if c in times else c for c in cols)
        rows = self._rows(
            "continuity scans",
            f"SELECT {select} FROM continuity_scans FINAL ORDER BY symbol, interval, window",  # noqa: S608
            {},
        )
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def continuity(
        self, st: Stream, start_ms: int | None, end_ms: int | None, now_ms: int, max_ranges: int
    ) -> ContinuityReport:
        """``streams.continuity.scan`` over ``[start_ms, end_ms)`` (None: the stored edge), one query.

        ScanRangeError (a window that cannot be scanned) passes through for the route to answer 422."""
        t0 = time.perf_counter()
        with self.pool.client() as client:
            try:
                report = scan(client, st.symbol, st.interval, days=None, start_ms=start_ms, end_ms=end_ms,
                              now_ms=now_ms, max_ranges=max_ranges)  # fmt: skip
            except ScanRangeError:
                raise
            except ContinuityError as exc:
                raise _unavailable("continuity", exc) from exc
        logger.debug("query=continuity key=%s ms=%.1f", st.key, (time.perf_counter() - t0) * 1000)
        return report

    # --- gaps -------------------------------------------------------------------------------
    def _lifecycles(self, what: str, symbols: list[str], intervals: list[str],
                    states: Sequence[str] | None) -> list[SegmentLifecycle]:  # fmt: skip
        """Gap segments with their effective state: the topology's ``gap_segments`` joined with
        the orchestrator's ``gap_repairs`` (``streams.backfill.segment_lifecycles``)."""
        with self.pool.client() as client:
            try:
                return segment_lifecycles(client, symbols=symbols, intervals=intervals, states=states)
            except BackfillError as exc:
                raise _unavailable(what, exc) from exc

    def gap_status(self, st: Stream, limit: int, state: str | None) -> tuple[list[dict[str, Any]], int, int]:
        """The newest ``limit`` segments of the stream (in ``state`` when given), ascending by
        segment_id, and its segments still missing bars with their count, from one read."""
        segs = self._lifecycles("gaps.status", [st.symbol], [st.interval], None)
        waiting = [s for s in segs if s.state in OPEN_GAP_STATES]
        shown = segs if state is None else [s for s in segs if s.state == state]
        return [{
            "segment_id": s.segment_id, "segment_end": s.segment_end, "from_open_time": s.from_open_time,
            "to_open_time": s.to_open_time, "missing_bars": s.missing_bars, "state": s.state,
            "detected_at": s.detected_at, "repaired_at": s.repaired_at, "attempts": s.attempts,
            "last_error": s.last_error, "updated_at": s.updated_at, "from_ts": s.from_open_time,
            "to_ts": s.to_open_time, "missing": s.missing_bars,
        } for s in shown[-limit:]], len(waiting), sum(s.missing_bars for s in waiting)  # fmt: skip

    def gap_counts(self, symbols: list[str], intervals: list[str]) -> GapCounts:
        """Segments still missing bars over the given streams, by effective state, from one read:
        those waiting for a repair (open, repairing, failed) apart from confirmed exchange gaps."""
        segs = self._lifecycles("gaps.open", symbols, intervals, OPEN_GAP_STATES)
        waiting = [s for s in segs if s.state in WAITING_STATES]
        exchange = [s for s in segs if s.state == "exchange_gap"]
        return GapCounts(
            waiting=len(waiting),
            waiting_bars=sum(s.missing_bars for s in waiting),
            failed=sum(s.state == "failed" for s in waiting),
            exchange=len(exchange),
            exchange_bars=sum(s.missing_bars for s in exchange),
        )

    # --- events (WebSocket) -----------------------------------------------------------------
    def snapshot(self, st: Stream, limit: int) -> SnapshotData:
        """The newest closed candles consistent with one event seq.

        ``seq`` and the newest appended open time are read in one SELECT (one set of parts).
        The sink stores a batch's candles before its events, so every candle of an event with
        seq <= ``seq`` is visible afterwards. Candles are capped at the newest open time an
        append with seq <= ``seq`` carried, so an ``append`` with a higher seq is never already
        in the snapshot; only a late fill or a repair may be (clients upsert by open_time).
        A stream without any append (bulk-loaded history only) is not capped.
        """
        head = self._rows("ws.snapshot.seq", SQL_SNAPSHOT_HEAD, st.params())[0]
        seq = int(head[0] or 0)
        capped = int(head[2]) > 0 and head[1] is not None
        params = st.params(uncapped=not capped, cap=int(head[1]) if capped else 0, n=limit)
        rows = self._rows("ws.snapshot.candles", SQL_SNAPSHOT_CANDLES, params)
        first, last, count = self._rows("ws.snapshot.meta", SQL_SNAPSHOT_META, params)[0]
        has = int(count) > 0
        return SnapshotData(
            seq=seq,
            candles=[candle_dict(r) for r in reversed(rows)],
            earliest_open_time=int(first) if has else None,
            latest_open_time=int(last) if has else None,
            count=int(count),
        )

    def book_seed(self, st: Stream) -> tuple[int, list[dict[str, Any]]]:
        """(max stored seq, the newest BOOK_ROWS candles ascending), the seq read first: every
        event up to it is in the candles read after (the sink stores candles before events)."""
        seq = self.max_seq(st)
        rows = self._rows("recent.book", SQL_RECENT, st.params(include_open=True, n=BOOK_ROWS))
        return seq, [candle_dict(r) for r in reversed(rows)]

    def max_seq(self, st: Stream) -> int:
        return int(self._rows("ws.max_seq", SQL_MAX_SEQ, st.params())[0][0] or 0)

    def events_complete(self, st: Stream, after: int, upto: int) -> bool:
        """Whether ``ohlcv_events`` still holds every seq in (after, upto] (partial updates expire)."""
        rows = self._rows("ws.resume.check", SQL_EVENTS_COUNT, st.params(a=after, b=upto))
        return int(rows[0][0]) == upto - after

    def events(self, st: Stream, after: int, upto: int, limit: int) -> list[tuple[int, str, str]]:
        """(seq, type, payload JSON) of stored events with after < seq <= upto, ascending, one per seq."""
        rows = self._rows("ws.events", SQL_EVENTS, st.params(a=after, b=upto, n=limit))
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    # --- health -----------------------------------------------------------------------------
    def ping(self) -> None:
        self._rows("health.ping", SQL_PING, {})

    def last_ingested_ms(self, symbols: list[str], interval: str) -> int | None:
        last = self._rows("health.ingestion", SQL_LAST_INGESTED, {"syms": symbols, "i": interval})[0][0]
        return None if last is None else int(last)

    def last_emitted_ms(self, symbols: list[str]) -> int | None:
        last = self._rows("health.topology", SQL_LAST_EMITTED, {"syms": symbols})[0][0]
        return None if last is None else int(last)
