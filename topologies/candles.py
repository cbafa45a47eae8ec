"""The candle topology: raw klines in, candle events and ClickHouse rows out.

``build_candles`` is a pure builder (no I/O): it wires named steps onto a StreamingDataFrame of
the raw kline topic (values as bytes, keys ``SYMBOL:interval``):

1. ``decode``: bytes -> candle, or a dead letter with the reason and topic[partition]@offset;
2. ``apply`` (stateful, per key): the CandleStateMachine -> events, segment rows;
3. branches: events -> ``ohlcv.candle.events``; dead letters -> ``ohlcv.deadletter``;
   events and segment rows -> the ClickHouse sink; higher-interval candles completed by the
   resampler -> back to the raw topic (keyed ``SYMBOL:5m`` ...), where step 2 treats them
   like any kline.
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


def make_step(machine: CandleStateMachine, resampler: Resampler | None = None) -> Any:
    """The stateful step. With a resampler, each new or repaired closed 1m candle also updates
    the higher intervals, in the same key's state (the resampler's keys do not collide with the
    state machine's), and the higher candles it completes go back to the raw topic."""

    def apply_record(item: Decoded, state: State[Any, Any]) -> list[dict[str, Any]]:
        candles, dead = item
        if not candles:
            return dead
        c0 = candles[0]
        _child(KLINES_PROCESSED, c0.interval).inc(len(candles))
        outs = machine.apply_many(candles, state)
        closed_1m: list[dict[str, Any]] = []
        for o in outs:
            if o["kind"] == "event":
                _child(EVENTS_EMITTED, o["type"], o["interval"]).inc()
                if o["type"] == "partial_close":
                    PARTIAL_CLOSE_LATENCY.observe(o["latency_ms"])
                elif o["type"] == "append" and o["late"]:
                    LATE_FILLS.inc(o["count"])
                if resampler is not None and c0.interval == "1m":
                    closed_1m.extend(candles_of_event(o))
        if closed_1m:
            assert resampler is not None
            higher = resampler.apply_many(c0.symbol, closed_1m, state)
            if higher:
                outs.extend(higher_records(higher, int(time.time() * 1000)))
        return outs + dead if dead else outs

    return apply_record


def _is_published(o: dict[str, Any]) -> bool:
    return bool(o["kind"] in ("event", "dead", "raw"))


def _is_stored(o: dict[str, Any]) -> bool:
    return bool(o["kind"] in ("event", "segment", "candle"))


def _published_value(o: dict[str, Any]) -> dict[str, Any]:
    if o["kind"] == "raw":
        value: dict[str, Any] = o["value"]
        return value
    return {k: v for k, v in o.items() if k != "kind"}


def _raw_key(value: dict[str, Any]) -> str:
    if "klines" in value:
        return f"{value['symbol']}:{value['interval']}"
    return f"{value['event']['s']}:{value['event']['k']['i']}"


def _routes(events: Topic, dead: Topic, raw: Topic | None) -> tuple[Any, Any]:
    """The topic and key of a published value: an event (it has ``seq``), a dead letter (it has
    ``stage``), or a higher candle going back to the raw topic."""

    def topic(value: dict[str, Any], key: Any, timestamp: int, headers: Any) -> Topic:
        if "seq" in value:
            return events
        if "stage" in value:
            return dead
        assert raw is not None, (
            "higher candles come from a resampler, which build_candles gives the raw topic"
        )
        return raw

    def key(value: dict[str, Any]) -> str | None:
        if "seq" in value:
            return f"{value['symbol']}:{value['interval']}"
        if "stage" in value:
            return value.get("key")
        return _raw_key(value)

    return topic, key


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

    The outputs split in two branches only, published and stored: Quix copies (pickles) every
    value once per extra branch, so one dynamic ``to_topic`` routes events, dead letters and
    higher candles instead of a branch each.
    """
    if resampler is not None and raw_topic is None:
        raise ValueError("resampling needs the raw topic to send higher candles to")
    decoded = sdf.apply(decode_record, metadata=True)
    out = decoded.apply(make_step(machine, resampler), stateful=True, expand=True)
    topic, key = _routes(events_topic, deadletter_topic, raw_topic)
    out.filter(_is_published).apply(_published_value).to_topic(topic, key=key)
    if sink is not None:
        out.filter(_is_stored).sink(sink)
    return out
