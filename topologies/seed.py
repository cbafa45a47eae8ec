"""What the candle topology reads back from ClickHouse: its re-seed and old candles.

ClickHouse is the durable record; the broker may be memory-only. On the first message of a
stream in a process the topology re-seeds that stream's state from here, and it asks here about
closed candles older than its state holds. Values are bound parameters, never interpolated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from schemas.klines import Candle
from topologies.candle_logic import Known
from topologies.feature_logic import StoredBar

logger = logging.getLogger(__name__)

OPEN_STATES = ("open", "repairing", "failed", "exchange_gap")


#: stored closed candles among given open times, under FINAL
_CLOSED_FINAL = (
    "SELECT toUnixTimestamp64Milli(open_time), open, high, low, close, volume, quote_volume, trades, "
    "taker_buy_base, taker_buy_quote, bars, revision FROM ohlcv_candles FINAL "
    "WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
    "AND open_time BETWEEN fromUnixTimestamp64Milli({a:Int64}) AND fromUnixTimestamp64Milli({b:Int64}) "
    "AND toUnixTimestamp64Milli(open_time) IN {ts:Array(Int64)}"
)
#: the same, newest version announced by an event of seq <= q (see ``ClickHouseLookup.seed``)
_CLOSED_AS_OF = (
    "SELECT t, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11 FROM ("
    "SELECT toUnixTimestamp64Milli(open_time) AS t, argMax((open, high, low, close, volume, quote_volume, "
    "trades, taker_buy_base, taker_buy_quote, bars, revision), version) AS r FROM ohlcv_candles "
    "WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
    "AND open_time BETWEEN fromUnixTimestamp64Milli({a:Int64}) AND fromUnixTimestamp64Milli({b:Int64}) "
    "AND toUnixTimestamp64Milli(open_time) IN {ts:Array(Int64)} AND event_seq <= {q:UInt64} GROUP BY t)"
)


def _values(r: Sequence[Any]) -> list[Any]:
    """A stored row's fingerprint values (open .. bars), ints as ints (``fingerprint``)."""
    return [*r[:6], None if r[6] is None else int(r[6]), *r[7:9], None if r[9] is None else int(r[9])]


class ClickHouseLookup:
    def __init__(self, client: Client):
        self.client = client
        self._lock = threading.Lock()

    def seed(self, symbol: str, interval: str) -> dict[str, Any]:
        """The stream as its events announced it. ``ohlcv_events`` is written last in each sink
        batch, so a row with ``event_seq`` above the stream's max(seq) is from a batch cut short
        (migration 0004): it counts neither for first/last nor for segments, and its closed
        candles come back as ``torn``, to be announced again."""
        params: dict[str, Any] = {"s": symbol, "i": interval}
        with self._lock:
            seq = self.client.query(
                "SELECT max(seq) FROM ohlcv_events WHERE symbol = {s:String} AND interval = {i:String}",
                parameters=params,
            ).result_rows[0][0]
            params["q"] = int(seq or 0)
            span = self.client.query(
                "SELECT toUnixTimestamp64Milli(minOrNull(open_time)), "
                "toUnixTimestamp64Milli(maxOrNull(open_time)) FROM ohlcv_candles "
                "WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
                "AND event_seq <= {q:UInt64}",
                parameters=params,
            ).result_rows[0]
            torn = self.client.query(
                "SELECT DISTINCT toUnixTimestamp64Milli(open_time) FROM ohlcv_candles "
                "WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
                "AND event_seq > {q:UInt64} "
                "ORDER BY 1",
                parameters=params,
            ).result_rows
            segs = self.client.query(
                "SELECT segment_id, s.1, s.2, s.3, s.4 FROM ("
                "  SELECT segment_id, argMax((toUnixTimestamp64Milli(from_open_time), "
                "    toUnixTimestamp64Milli(to_open_time), toUnixTimestamp64Milli(detected_at), "
                "    segment_end, state), (version, event_seq)) AS s "
                "  FROM gap_segments WHERE symbol = {s:String} AND interval = {i:String} "
                "  AND event_seq <= {q:UInt64} GROUP BY segment_id) "
                "WHERE s.5 IN {st:Array(String)} ORDER BY s.1",
                parameters={**params, "st": list(OPEN_STATES)},
            ).result_rows
        has = span[0] is not None  # NULL without rows; no count(), which duplicates would inflate
        return {
            "first_closed": int(span[0]) if has else None,
            "last_closed": int(span[1]) if has else None,
            "seq": int(seq or 0),
            "segments": [[int(x) for x in row] for row in segs],
            "torn": [int(r[0]) for r in torn],
        }

    def closed_candles(
        self, symbol: str, interval: str, open_times: list[int], max_seq: int | None = None
    ) -> dict[int, Known]:
        if not open_times:
            return {}
        params = {"s": symbol, "i": interval, "a": min(open_times), "b": max(open_times), "ts": open_times}
        if max_seq is None:
            sql = _CLOSED_FINAL
        else:
            sql = _CLOSED_AS_OF
            params["q"] = max_seq
        with self._lock:
            rows = self.client.query(sql, parameters=params).result_rows
        return {int(r[0]): (_values(r[1:11]), int(r[11])) for r in rows}

    def bars_between(self, symbol: str, start_ms: int, end_ms: int) -> dict[int, list[Any]]:
        """Stored closed 1m bars of ``symbol`` in ``[start_ms, end_ms)`` (for the resampler)."""
        with self._lock:
            rows = self.client.query(
                "SELECT toUnixTimestamp64Milli(open_time), open, high, low, close, volume, quote_volume, "
                "trades, taker_buy_base, taker_buy_quote FROM ohlcv_candles FINAL "
                "WHERE symbol = {s:String} AND interval = '1m' AND is_closed "
                "AND open_time >= fromUnixTimestamp64Milli({a:Int64}) "
                "AND open_time < fromUnixTimestamp64Milli({b:Int64})",
                parameters={"s": symbol, "a": start_ms, "b": end_ms},
            ).result_rows
        return {int(r[0]): [*r[1:6], None if r[6] is None else int(r[6]), *r[7:]] for r in rows}

    def last_stored(self, symbol: str) -> int:
        with self._lock:
            row = self.client.query(
                "SELECT toUnixTimestamp64Milli(maxOrNull(open_time)) FROM ohlcv_candles "
                "WHERE symbol = {s:String} AND interval = '1m' AND is_closed",
                parameters={"s": symbol},
            ).result_rows[0]
        return -1 if row[0] is None else int(row[0])


#: stored feature rows of a stream as ``StoredBar`` fields, under FINAL
_FEATURE_BARS = (
    "SELECT toUnixTimestamp64Milli(open_time) AS t, open, high, low, close, volume, bar_repaired, "
    "feature_version, carry FROM feature_snapshots FINAL "
    "WHERE symbol = {s:String} AND interval = {i:String} "
)


_NEWEST_CANDLE_BEFORE = (
    "SELECT toUnixTimestamp64Milli(maxOrNull(open_time)) FROM ohlcv_candles "
    "WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
    "AND open_time < fromUnixTimestamp64Milli({b:Int64})"
)


class FeatureHistory:
    """The features topology's record: its re-seed and the bars older than its state holds,
    read from ``feature_snapshots`` (each row keeps its bar, flags and carried intermediates)."""

    def __init__(self, client: Client):
        self.client = client
        self._lock = threading.Lock()

    def _bars(self, symbol: str, interval: str, rows: Sequence[Sequence[Any]]) -> list[StoredBar]:
        out = []
        for t, o, h, lo, c, v, rep, ver, stored in rows:
            candle = Candle(symbol, interval, int(t), 0, o, h, lo, c, v, None, None, None, None, True)
            carry = list(stored)
            carry[0] = None if carry[0] is None else int(carry[0])  # pos is an index
            out.append(StoredBar(candle, bool(rep), int(ver), carry))
        return out

    def latest(self, symbol: str, interval: str, n: int) -> list[StoredBar]:
        """The newest ``n`` stored bars of the stream, oldest first."""
        with self._lock:
            rows = self.client.query(
                _FEATURE_BARS + "ORDER BY t DESC LIMIT {n:UInt32}",
                parameters={"s": symbol, "i": interval, "n": n},
            ).result_rows
        return self._bars(symbol, interval, rows[::-1])

    def catch_up(self, symbol: str, interval: str, newest_row: int | None, before: int) -> int:
        """Stored closed candles before ``before`` newer than the stream's newest feature row
        (``newest_row``; None: it has none) have no rows: history bulk-loaded without events.
        Derive them (``topologies.feature_rebuild``, from the start of the run that holds the
        newest row) so the state seeds from a complete record; returns the rows written."""
        from topologies.feature_rebuild import rebuild_features

        with self._lock:
            (newest_candle,) = self.client.query(
                _NEWEST_CANDLE_BEFORE, parameters={"s": symbol, "i": interval, "b": before}
            ).result_rows[0]
            if newest_candle is None or (newest_row is not None and newest_row >= int(newest_candle)):
                return 0
            done = rebuild_features(self.client, symbol, interval, start_ms=newest_row, end_ms=before)
        logger.info(
            "features catch-up %s:%s: %d rows written for stored candles without rows (%.1fs)",
            symbol, interval, done.written, done.seconds,
        )  # fmt: skip
        return done.written

    def between(self, symbol: str, interval: str, a: int, b: int) -> list[StoredBar]:
        """Stored bars with open time in ``[a, b]``, oldest first."""
        with self._lock:
            rows = self.client.query(
                _FEATURE_BARS + "AND open_time BETWEEN fromUnixTimestamp64Milli({a:Int64}) "
                "AND fromUnixTimestamp64Milli({b:Int64}) ORDER BY t",
                parameters={"s": symbol, "i": interval, "a": a, "b": b},
            ).result_rows
        return self._bars(symbol, interval, rows)
