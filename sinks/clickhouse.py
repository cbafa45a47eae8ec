"""ClickHouse sink of the candle topology: candles, gap segments and events, idempotently.

A Quix ``BatchingSink``: rows accumulate per checkpoint and are written in ``write(batch)``.
Every write is replay-safe (ReplacingMergeTree on natural keys + version), so at-least-once
delivery never leaves a duplicate under FINAL. When ClickHouse cannot be reached the sink raises
``SinkBackpressureError``: Quix pauses the partitions, drops the batch and re-reads it from the
last committed offset later, so nothing acknowledged is lost and the topology catches up.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
from clickhouse_connect.driver.client import Client
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from ohlcv.infra.clickhouse import make_client
from schemas.events import candle_version, output_json, stored_candles
from sinks.clickhouse_bulk import ARROW_TS, INSERT_SETTINGS

logger = logging.getLogger(__name__)

CANDLE_COLUMNS = [
    "symbol", "interval", "open_time", "close_time", "open", "high", "low", "close", "volume",
    "quote_volume", "trades", "taker_buy_base", "taker_buy_quote", "is_closed", "source", "bars",
    "revision", "version", "event_time", "ingested_at", "event_seq",
]  # fmt: skip
SEGMENT_COLUMNS = [
    "symbol", "interval", "segment_id", "segment_end", "from_open_time", "to_open_time",
    "missing_bars", "state", "detected_at", "repaired_at", "updated_at", "version", "event_seq",
]  # fmt: skip
EVENT_COLUMNS = ["symbol", "interval", "seq", "type", "open_time", "emitted_at", "payload"]


def event_open_time(ev: dict[str, Any]) -> int | None:
    if "candle" in ev:
        return int(ev["candle"]["open_time"])
    if ev.get("candles"):
        return int(ev["candles"][0]["open_time"])
    if "from_open_time" in ev:
        return int(ev["from_open_time"])
    return None


_CANDLE_FIELDS = operator.itemgetter(
    "open_time", "close_time", "open", "high", "low", "close", "volume", "quote_volume", "trades",
    "taker_buy_base", "taker_buy_quote", "is_closed", "source", "bars",
)  # fmt: skip


class Rows:
    """Rows for the three tables, built from topology outputs.

    Candles go in as one Arrow table per write, built column by column from the events' candle
    dicts (the topology's bulk: hundreds of thousands of rows per checkpoint); segments and
    events, a few rows per record, as Python rows.
    """

    def __init__(self) -> None:
        #: (symbol, interval, announcing seq, ingested_at, candle dicts)
        self._parts: list[tuple[str, str, int, int, list[dict[str, Any]]]] = []
        self.candle_count = 0
        self.segments: list[list[Any]] = []
        self.events: list[list[Any]] = []

    def add(self, out: dict[str, Any], now_ms: int) -> None:
        kind = out.get("kind")
        if kind == "event":
            symbol, interval, seq = out["symbol"], out["interval"], out["seq"]
            cs = stored_candles(out)
            if cs:
                self._parts.append((symbol, interval, seq, now_ms, cs))
                self.candle_count += len(cs)
            # the bytes the topology published, else the same serialised here
            data = out.get("json") or output_json(out)
            self.events.append([
                out["symbol"], out["interval"], out["seq"], out["type"], event_open_time(out),
                out["emitted_at"], data,
            ])  # fmt: skip
        elif kind == "segment":
            self.segments.append([
                out["symbol"], out["interval"], out["segment_id"], out["segment_end"],
                out["from_open_time"], out["to_open_time"], out["missing_bars"], out["state"],
                out["detected_at"], out["repaired_at"], out["updated_at"], out["updated_at"],
                out.get("seq", 0),
            ])  # fmt: skip
        elif kind == "candle":
            self._parts.append((out["symbol"], out["interval"], 0, now_ms, [out["candle"]]))
            self.candle_count += 1

    @property
    def count(self) -> int:
        return self.candle_count + len(self.segments) + len(self.events)

    def candle_rows(self) -> list[list[Any]]:
        """The rows of ``candle_table`` as ``CANDLE_COLUMNS`` lists, timestamps as epoch ms
        (builds the table: for readers such as tests, not for the write path)."""
        if not self._parts:
            return []
        columns = [
            (col.cast(pa.int64()) if pa.types.is_timestamp(col.type) else col).to_pylist()
            for col in self.candle_table().columns
        ]
        return [list(row) for row in zip(*columns, strict=True)]

    def candle_table(self) -> pa.Table:
        """The candle rows as one Arrow table of ``CANDLE_COLUMNS``: version as ``candle_version``,
        ``event_time`` the close time, ``ingested_at`` the time of ``add``, ``event_seq`` the
        announcing event's seq (see migration 0004)."""
        cs = [c for part in self._parts for c in part[4]]
        # one C-level pass turns the dicts into columns (a comprehension per column cost ~3x)
        columns = zip(*map(_CANDLE_FIELDS, cs), strict=True)
        (open_time, close_time_ms, open_, high, low, close, volume, quote_volume, trades,
         taker_base, taker_quote, is_closed, source, bars) = columns  # fmt: skip

        def repeat(field: int) -> list[Any]:
            return [part[field] for part in self._parts for _ in part[4]]

        def dictionary(values: Any) -> pa.Array:
            return pa.array(values, pa.string()).dictionary_encode()

        def floats(values: Any) -> pa.Array:
            return pa.array(values, pa.float64())

        close_time = pa.array(close_time_ms, ARROW_TS)
        arrays = [
            dictionary(repeat(0)), dictionary(repeat(1)), pa.array(open_time, ARROW_TS), close_time,
            floats(open_), floats(high), floats(low), floats(close), floats(volume), floats(quote_volume),
            pa.array(trades, pa.uint64()), floats(taker_base), floats(taker_quote),
            pa.array(is_closed, pa.bool_()), dictionary(source), pa.array(bars, pa.uint16()),
            pa.array([c.get("revision") or 0 for c in cs], pa.uint32()),
            pa.array([candle_version(c) for c in cs], pa.uint64()),
            close_time, pa.array(repeat(3), ARROW_TS), pa.array(repeat(2), pa.uint64()),
        ]  # fmt: skip
        return pa.Table.from_arrays(arrays, names=CANDLE_COLUMNS)

    def write(self, client: Client) -> None:
        # segments first: a write cut short after the candles (which the re-seed and the
        # duplicate check read) must not lose the segment a replay will no longer detect;
        # candles before events: an event row must never point at a candle not stored yet
        if self.segments:
            client.insert("gap_segments", self.segments, column_names=SEGMENT_COLUMNS)
        if self._parts:
            client.insert_arrow("ohlcv_candles", self.candle_table(), settings=INSERT_SETTINGS)
        if self.events:
            client.insert_arrow("ohlcv_events", self.event_table(), settings=INSERT_SETTINGS)

    def event_table(self) -> pa.Table:
        """The event rows as one Arrow table of ``EVENT_COLUMNS`` (the row insert's Python
        encoding cost about 5 µs an event; the payload goes in as the bytes published)."""
        symbol, interval, seq, typ, open_time, emitted_at, payload = zip(*self.events, strict=True)
        arrays = [
            pa.array(symbol, pa.string()).dictionary_encode(),
            pa.array(interval, pa.string()).dictionary_encode(),
            pa.array(seq, pa.uint64()), pa.array(typ, pa.string()).dictionary_encode(),
            pa.array(open_time, ARROW_TS), pa.array(emitted_at, ARROW_TS),
            pa.array(payload, pa.binary()),
        ]  # fmt: skip
        return pa.Table.from_arrays(arrays, names=EVENT_COLUMNS)


class ClickHouseSink(BatchingSink):
    """A topology's ClickHouse sink: one write per checkpoint for every partition's batch,
    ``SinkBackpressureError`` when ClickHouse cannot take it (Quix pauses, drops the batch and
    re-reads it from the last committed offset), flush hooks before the write.

    Flush hooks run at the start of every flush, before any write: Quix flushes sinks before
    it prepares the state transactions, so the topology writes its checkpoint-scoped state
    views there (``topologies.state_cache``). Subclasses say how a batch's values become
    writes (``rows``)."""

    def __init__(self, url: str, database: str | None = None, *, retry_after_s: float = 2.0):
        super().__init__()
        self.url = url
        self.database = database
        self.retry_after_s = retry_after_s
        self._client: Client | None = None
        self.rows_written = 0
        #: wall clock (s) of the last successful write
        self.last_success: float | None = None
        self._flush_hooks: list[Callable[[], None]] = []

    def add_flush_hook(self, hook: Callable[[], None]) -> None:
        self._flush_hooks.append(hook)

    def flush(self) -> None:
        """The flush hooks, then one write of every partition's batch of this checkpoint (one
        insert per table, not one per partition: a chDB insert has a fixed cost of about a
        millisecond)."""
        for hook in self._flush_hooks:
            hook()
        batches = list(self._batches.values())
        self._batches.clear()
        if batches:
            self._write(batches)

    def setup(self) -> None:
        self._client = make_client(self.url, self.database)

    def write(self, batch: SinkBatch) -> None:
        self._write([batch])

    def rows(self, values: Iterable[Any], now_ms: int) -> Any:
        """The writes of one checkpoint: an object with ``write(client)`` and ``count``."""
        raise NotImplementedError

    def _write(self, batches: list[SinkBatch]) -> None:
        now = int(time.time() * 1000)
        rows = self.rows((item.value for batch in batches for item in batch), now)
        where = ", ".join(f"{b.topic}[{b.partition}]@{b.start_offset}" for b in batches)
        try:
            if self._client is None:
                self.setup()
            assert self._client is not None
            rows.write(self._client)
        except Exception as exc:
            # Any failure to write is treated as ClickHouse being unavailable: the batch is
            # re-read from Kafka after a pause, and the idempotent tables absorb the replay.
            logger.warning(
                "clickhouse write failed at=%s records=%d: %s; backing off %.1fs",
                where, sum(b.size for b in batches), exc, self.retry_after_s,
            )  # fmt: skip
            self._client = None
            raise SinkBackpressureError(retry_after=self.retry_after_s) from exc
        self.rows_written += rows.count
        self.last_success = time.time()
        self.written(rows)
        logger.debug("clickhouse batch written at=%s rows=%d", where, rows.count)

    def written(self, rows: Any) -> None:
        """Called after each successful write (for a subclass's metrics)."""


class ClickHouseCandleSink(ClickHouseSink):
    """Writes candle topology outputs (``kind`` = event | segment | candle; a record's value is
    one output or the list of them, other kinds are skipped) into ClickHouse."""

    def rows(self, values: Iterable[Any], now_ms: int) -> Rows:
        rows = Rows()
        for value in values:
            if isinstance(value, list):
                for out in value:
                    rows.add(out, now_ms)
            else:
                rows.add(value, now_ms)
        return rows
