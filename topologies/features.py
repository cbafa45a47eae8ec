"""The features topology: candle events in, feature rows out (``ohlcv.features``, ClickHouse).

``build_features`` is a pure builder (no I/O): it wires named steps onto a StreamingDataFrame of
the candle events topic (values JSON, keys ``SYMBOL:interval``):

1. ``apply`` (stateful, per key): ``append`` and ``repair`` events -> the feature rows they
   produce (``topologies.feature_logic``: one for a new bar; for a repair, a late fill or a
   closed gap, every row whose lookback or recursion holds the changed bar, derived again with
   ``feature_version`` + 1). ``partial_*`` events carry no closed bar; ``gap_detected`` and
   ``gap_repaired`` change nothing by themselves: the state sees the hole from the open times of
   the bars, and the late fills that close it arrive as ``append`` (``late: true``) events;
2. ``update``: the rows' news columns (``topologies.news_features``: rolling news sentiment of
   the symbol as known at the close, and whether the news input was stalled);
3. ``publish``: each row -> ``ohlcv.features``;
4. ``sink``: the rows -> ``feature_snapshots``.

Re-seed: on the first event of a stream in a process (and after a failed checkpoint) its state
is rebuilt from ``feature_snapshots`` (the newest ``ring_bars`` rows, with their bars, flags and carries); the
sink writes before Quix commits offsets, so the table holds at least every row of a committed
event, and a replayed event whose bars the state already holds emits nothing. Stored closed
candles before the event's bars that are newer than the newest stored row have no rows
(history bulk-loaded without events): the seed first derives them (``FeatureHistory.catch_up``,
the feature rebuild), so the stream continues exactly from the record.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from prometheus_client import Counter, Gauge
from quixstreams import State
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import Topic
from quixstreams.sinks import BaseSink

from schemas.features import RowBlock
from schemas.klines import Candle
from topologies.candles import _Tally
from topologies.feature_logic import (
    CandleKind,
    FeatureStream,
    NeedsHistory,
    StoredBar,
    rebuild,
    ring_bars,
    ring_cover,
)
from topologies.news_features import NewsBook
from topologies.producing import FastProducer
from topologies.state_cache import CheckpointStates

logger = logging.getLogger(__name__)

#: state key: the process token of the seed the stream's state holds
SEEDED = "seeded"

ROWS_EMITTED = Counter("feature_rows_emitted_total", "Feature rows emitted", ["interval"])
RECOMPUTED = Counter(
    "feature_recomputed_total", "Feature rows derived again after history changed", ["reason"]
)
LAG = Gauge(
    "feature_scheduler_lag_seconds",
    "Newest closed candle's event to its feature row: emission of the row minus the event's",
)
HISTORY_READS = Counter(
    "feature_history_reads_total", "Reads of feature_snapshots for history older than the state", ["why"]
)


class History(Protocol):
    def latest(self, symbol: str, interval: str, n: int) -> list[StoredBar]: ...
    def between(self, symbol: str, interval: str, a: int, b: int) -> list[StoredBar]: ...
    def catch_up(self, symbol: str, interval: str, newest_row: int | None, before: int) -> int: ...


def _candle(symbol: str, interval: str, d: dict[str, Any]) -> Candle:
    return Candle(symbol, interval, d["open_time"], d["close_time"], d["open"], d["high"], d["low"],
                  d["close"], d["volume"], None, None, None, None, True)  # fmt: skip


def event_candles(event: dict[str, Any]) -> tuple[list[Candle], CandleKind] | None:
    """The closed candles an event brings to the features and how (None: it brings none)."""
    typ = event.get("type")
    if typ == "append":
        kind: CandleKind = "late_fill" if event.get("late") else "new"
        ds = event["candles"]
    elif typ == "repair":
        kind = "repair"
        ds = [event["candle"]]
    else:
        return None
    s, i = event["symbol"], event["interval"]
    return [_candle(s, i, d) for d in ds], kind


def make_feature_step(
    stream: FeatureStream,
    history: History,
    states: CheckpointStates | None = None,
    tally: _Tally | None = None,
) -> Any:
    """The stateful step (see the module docstring). ``states``: checkpoint-scoped views (the
    sink writes them at each checkpoint), else straight through Quix state. ``tally``: where
    its metric increments gather (the builder flushes it at each checkpoint too)."""
    tally = tally or _Tally()
    # the state of a stream seeded in this process holds this token; a checkpoint that failed
    # (ClickHouse backpressure) rolls the seed back with it, and the stream is seeded again
    token = uuid.uuid4().hex

    def seed(symbol: str, interval: str, view: Any, before: int) -> None:
        HISTORY_READS.labels("seed").inc()
        bars = history.latest(symbol, interval, stream.ring_bars)
        newest = bars[-1].candle.open_time if bars else None
        if (newest is None or newest < before) and history.catch_up(symbol, interval, newest, before):
            HISTORY_READS.labels("catch_up").inc()
            bars = history.latest(symbol, interval, stream.ring_bars)
        if bars:
            # fewer rows than asked for: the ring holds the stream's whole record
            cover = bars[0].candle.open_time if len(bars) >= stream.ring_bars else None
            rebuild(bars, cover, view)
        else:
            view.delete("f")

    def apply(event: dict[str, Any], state: State[Any, Any]) -> list[dict[str, Any]]:
        got = event_candles(event)
        if got is None or not got[0]:
            return []
        candles, kind = got
        symbol, interval = event["symbol"], event["interval"]
        key = f"{symbol}:{interval}"
        view: Any = state if states is None else states.view(key, state)
        if view.get(SEEDED) != token:
            seed(symbol, interval, view, min(c.open_time for c in candles))
            view.set(SEEDED, token)
        kinds = [kind] * len(candles)
        rows = (stream.apply(candles[0], kind, view) if len(candles) == 1
                else stream.apply_many(candles, kinds, view))  # fmt: skip
        if isinstance(rows, NeedsHistory):
            # the change reaches behind the ring: extend it with the stored bars before it
            HISTORY_READS.labels("older").inc()
            oldest, _ = ring_cover(view)
            assert oldest is not None
            older = history.between(symbol, interval, rows.from_open_time, oldest - 1)
            rebuild([*older, *ring_bars(view)], rows.from_open_time, view)
            rows = stream.apply_many(candles, kinds, view)
            assert not isinstance(rows, NeedsHistory), "a rebuilt ring covers the change"
        now = int(time.time() * 1000)
        seq = event["seq"]
        for r in rows:
            r["event_seq"] = seq
            r["emitted_at"] = now
            if r["reason"] != "new":
                tally.add(RECOMPUTED, 1, r["reason"])
        if isinstance(rows, RowBlock):
            rows.columns["event_seq"] = [seq]
            rows.columns["emitted_at"] = [now]
        if rows:
            tally.add(ROWS_EMITTED, len(rows), interval)
            LAG.set(max(0, now - int(event["emitted_at"])) / 1000)
        tally.maybe_flush()
        return rows

    return apply


def news_step(book: NewsBook, wait_s: float = 60.0) -> Any:
    """The rows' news columns; the first record waits (at most ``wait_s``) until the book has
    read every story published before the process started."""
    waited = False

    def annotate(rows: list[dict[str, Any]]) -> None:
        nonlocal waited
        if not waited:
            if not book.ready.wait(wait_s):
                logger.warning("news book not caught up after %.0fs: rows may miss stories", wait_s)
            waited = True
        book.annotate(rows)

    return annotate


def published(row: dict[str, Any]) -> bytes:
    """A row as ``ohlcv.features`` carries it (schemas.features): the whole row."""
    return orjson.dumps(row)


class FeaturePublisher:
    """Produces each row of a record onto the features topic through the Application's own
    producer (flushed, and in exactly-once mode transacted, at each checkpoint)."""

    def __init__(self, producer: Any, topic: Topic):
        self.producer = FastProducer(producer)
        self.topic = topic.name

    def __call__(self, rows: list[dict[str, Any]], key: Any, timestamp: int, headers: Any) -> None:
        if rows:
            self.producer.produce(self.topic, map(published, rows), key, timestamp)


def build_features(
    sdf: StreamingDataFrame,
    *,
    stream: FeatureStream,
    history: History,
    features_topic: Topic,
    sink: BaseSink | None,
    news: NewsBook | None = None,
    then: Callable[[StreamingDataFrame], StreamingDataFrame] | None = None,
) -> StreamingDataFrame:
    """Wire the feature steps onto ``sdf`` (the candle events topic). Returns the rows frame
    (one list of rows per event). A sink that takes flush hooks also writes the step's
    checkpoint-scoped state views at each checkpoint. ``news``: the stories the rows' news
    columns read (``topologies.news_features``; None: an empty book, no news, stalled).
    ``then``: steps wired onto the rows frame after publishing and before the sink (inline
    scoring, ``topologies.scoring.score_inline``), the sink then takes their values."""
    states: CheckpointStates | None = None
    tally = _Tally()
    if sink is not None and hasattr(sink, "add_flush_hook"):
        states = CheckpointStates()
        sink.add_flush_hook(states.flush)
        sink.add_flush_hook(tally.flush)  # a stream gone quiet still counts its last rows
    out = sdf.apply(make_feature_step(stream, history, states, tally), stateful=True)
    out = out.update(news_step(news or NewsBook()))
    out = out.update(FeaturePublisher(sdf.processing_context.producer, features_topic), metadata=True)
    if then is not None:
        out = then(out)
    if sink is not None:
        out.sink(sink)
    return out
