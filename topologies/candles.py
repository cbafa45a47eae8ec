"""The candle topology: raw klines in, candle events and ClickHouse rows out.

``build_candles`` is a pure builder (no I/O): it wires named steps onto a StreamingDataFrame of
the raw kline topic (values as bytes, keys ``SYMBOL:interval``):

1. ``decode``: bytes -> candle, or a dead letter with the reason and topic[partition]@offset;
2. ``apply`` (stateful, per key): the CandleStateMachine -> events, segment rows;
3. ``publish``: events -> ``ohlcv.candle.events``; dead letters -> ``ohlcv.deadletter``;
   higher-interval candles completed by the resampler -> back to the raw topic (keyed
   ``SYMBOL:5m`` ...), where step 2 treats them like any kline;
4. ``sink``: events and segment rows -> the ClickHouse sink.

One line of steps, no branches; one list of outputs per record travels down it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from prometheus_client import Counter, Histogram
from quixstreams import State
from quixstreams.context import message_context
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import Topic
from quixstreams.sinks import BaseSink

from schemas.events import output_json
from schemas.klines import (
    MAX_BATCH,
    Candle,
    MalformedKlineError,
    candles_from_raw,
    raw_batch,
    raw_from_candle,
)
from topologies.candle_logic import CandleStateMachine
from topologies.resample import Resampler, candles_of_event
from topologies.state_cache import CheckpointStates

logger = logging.getLogger(__name__)

KLINES_PROCESSED = Counter(
    "ohlcv_klines_processed_total", "Raw klines processed by the candle topology", ["interval"]
)
EVENTS_EMITTED = Counter("ohlcv_candle_events_total", "Candle events emitted", ["type", "interval"])
DEAD_LETTERS = Counter("ohlcv_deadletter_total", "Records sent to the dead-letter topic", ["stage"])
PARTIAL_CLOSE_LATENCY = Histogram(
    "ohlcv_partial_close_latency_ms",
    "Candle close time to partial_close emission (ms)",
    buckets=(10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 60_000),
)
LATE_FILLS = Counter("kline_late_fill_total", "Closed candles that arrived older than the last closed one")


_CHILDREN: dict[tuple[object, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """A labelled metric child, cached: ``labels()`` costs more than the increment itself."""
    key = (metric, *labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


def _position() -> str:
    try:
        ctx = message_context()
    except Exception:  # outside a Quix message context (sdf.test without ctx)
        return "unknown"
    return f"{ctx.topic}[{ctx.partition}]@{ctx.offset}"


def _dead(reason: str, payload: str, key: Any = None) -> dict[str, Any]:
    DEAD_LETTERS.labels(stage="decode").inc()
    return {
        "kind": "dead",
        "key": key if isinstance(key, str) else None,
        "reason": reason,
        "source": _position(),
        "stage": "candles.decode",
        "payload": payload[:10_000],
        "at": int(time.time() * 1000),
    }


Decoded = tuple[list[Candle], list[dict[str, Any]]]


def decode(value: Any, key: Any = None) -> Decoded:
    """Raw bytes (one kline or a batch) -> its candles, and a dead letter for each refused part.

    A record whose stream differs from its message key is refused whole: the key decides which
    stream's state a record touches.
    """
    try:
        raw = orjson.loads(value) if isinstance(value, bytes | bytearray | str) else value
        candles, bad = candles_from_raw(raw)
        if key is not None and candles and candles[0].key != key:
            raise MalformedKlineError(f"record of stream {candles[0].key} under key {key!r}")
    except (orjson.JSONDecodeError, MalformedKlineError) as exc:
        payload = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
        return [], [_dead(str(exc), payload, key)]
    dead = [_dead(reason, orjson.dumps(raw["klines"][i]).decode(), key) for i, reason in bad]
    return candles, dead


def decode_record(value: Any, key: Any, timestamp: int, headers: Any) -> Decoded:
    """``decode`` as a Quix apply callback with metadata (the message key)."""
    return decode(value, key)


def higher_records(higher: list[Candle], now: int) -> list[dict[str, Any]]:
    """Raw records for the higher candles one step completed: one per stream, a batch when it
    holds more than one (the last emission of a bucket wins; the machine sees it once)."""
    by_key: dict[str, dict[int, Candle]] = {}
    for h in higher:
        by_key.setdefault(h.key, {})[h.open_time] = h
    out: list[dict[str, Any]] = []
    for cs in by_key.values():
        ordered = [cs[t] for t in sorted(cs)]
        for i in range(0, len(ordered), MAX_BATCH):
            chunk = ordered[i : i + MAX_BATCH]
            value = (raw_from_candle(chunk[0], source="resample", received_at=now) if len(chunk) == 1
                     else raw_batch(chunk, source="resample", received_at=now))  # fmt: skip
            out.append({"kind": "raw", "value": value})
    return out


class _Tally:
    """Metric increments gathered per record and added to Prometheus at most every
    ``every_s`` (a labelled increment costs more than the step's own bookkeeping of a kline)."""

    def __init__(self, every_s: float = 0.25):
        self.every_s = every_s
        self.counts: dict[tuple[Any, ...], float] = {}
        self.due = 0.0

    def add(self, metric: Any, n: float, *labels: str) -> None:
        key = (metric, *labels)
        self.counts[key] = self.counts.get(key, 0) + n

    def maybe_flush(self) -> None:
        now = time.monotonic()
        if now >= self.due:
            self.due = now + self.every_s
            self.flush()

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        for (metric, *labels), n in counts.items():
            (_child(metric, *labels) if labels else metric).inc(n)


def make_step(
    machine: CandleStateMachine,
    resampler: Resampler | None = None,
    states: CheckpointStates | None = None,
) -> Any:
    """The stateful step. With a resampler, each new or repaired closed 1m candle also updates
    the higher intervals, in the same key's state (the resampler's keys do not collide with the
    state machine's), and the higher candles it completes go back to the raw topic.

    With ``states`` (the sink flushes it at each checkpoint), the step reads and writes the
    stream's state through a view decoded once per checkpoint (``topologies.state_cache``);
    without, straight through Quix state."""
    tally = _Tally()

    def apply_record(item: Decoded, state: State[Any, Any]) -> list[dict[str, Any]]:
        candles, dead = item
        if not candles:
            return dead
        c0 = candles[0]
        view: Any = state if states is None else states.view(c0.key, state)
        tally.add(KLINES_PROCESSED, len(candles), c0.interval)
        outs = machine.apply_many(candles, view)
        closed_1m: list[dict[str, Any]] = []
        for o in outs:
            if o["kind"] == "event":
                typ = o["type"]
                tally.add(EVENTS_EMITTED, 1, typ, o["interval"])
                if typ == "partial_close":
                    PARTIAL_CLOSE_LATENCY.observe(o["latency_ms"])
                elif typ == "append" and o["late"]:
                    tally.add(LATE_FILLS, o["count"])
                if resampler is not None and c0.interval == "1m":
                    closed_1m.extend(candles_of_event(o))
        if closed_1m:
            assert resampler is not None
            higher = resampler.apply_many(c0.symbol, closed_1m, view)
            if higher:
                outs.extend(higher_records(higher, int(time.time() * 1000)))
        tally.maybe_flush()
        return outs + dead if dead else outs

    return apply_record


def _raw_key(value: dict[str, Any]) -> str:
    if "klines" in value:
        return f"{value['symbol']}:{value['interval']}"
    return f"{value['event']['s']}:{value['event']['k']['i']}"


class Publisher:
    """Produces a record's published outputs — events to the events topic, dead letters to the
    dead-letter topic, higher candles back to the raw topic — through the Application's own
    producer (the one Quix flushes, and in exactly-once mode transacts, at each checkpoint).

    Each event is serialised once: the bytes go to Kafka and, as ``json``, to the sink's
    ``ohlcv_events`` row, so the topic and the table carry the same text."""

    def __init__(self, producer: Any, events: Topic, dead: Topic, raw: Topic | None):
        self.produce = producer.produce
        self.events = events.name
        self.dead = dead.name
        self.raw = raw.name if raw is not None else None

    def __call__(self, value: list[dict[str, Any]], key: Any, timestamp: int, headers: Any) -> None:
        produce = self.produce
        for o in value:
            kind = o["kind"]
            if kind == "event":
                data = o["json"] = output_json(o)
                produce(topic=self.events, value=data, key=f"{o['symbol']}:{o['interval']}",
                        timestamp=timestamp)  # fmt: skip
            elif kind == "dead":
                produce(topic=self.dead, value=output_json(o), key=o.get("key"), timestamp=timestamp)
            elif kind == "raw":
                assert self.raw is not None, (
                    "higher candles come from a resampler, which build_candles gives the raw topic"
                )
                produce(topic=self.raw, value=orjson.dumps(o["value"]), key=_raw_key(o["value"]),
                        timestamp=timestamp)  # fmt: skip


def build_candles(
    sdf: StreamingDataFrame,
    *,
    machine: CandleStateMachine,
    events_topic: Topic,
    deadletter_topic: Topic,
    sink: BaseSink | None,
    resampler: Resampler | None = None,
    raw_topic: Topic | None = None,
) -> StreamingDataFrame:
    """Wire the candle steps onto ``sdf`` (the raw kline topic). Returns the outputs frame.

    One straight line, no branches (Quix pickles a value once per extra branch): decode, the
    stateful step (one list of outputs per record), publish (``Publisher``, through the
    Application's producer), store (the sink takes the stored kinds of each list). A sink that
    takes flush hooks (``add_flush_hook``) also writes the step's checkpoint-scoped state views
    at each checkpoint, before Quix prepares the state transactions.
    """
    if resampler is not None and raw_topic is None:
        raise ValueError("resampling needs the raw topic to send higher candles to")
    states: CheckpointStates | None = None
    if sink is not None and hasattr(sink, "add_flush_hook"):
        states = CheckpointStates()
        sink.add_flush_hook(states.flush)
    decoded = sdf.apply(decode_record, metadata=True)
    out = decoded.apply(make_step(machine, resampler, states), stateful=True)
    publisher = Publisher(sdf.processing_context.producer, events_topic, deadletter_topic, raw_topic)
    out = out.update(publisher, metadata=True)
    if sink is not None:
        out.sink(sink)
    return out
