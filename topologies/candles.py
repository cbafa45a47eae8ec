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

from schemas.klines import Candle, MalformedKlineError, candle_from_raw
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


def decode(value: Any) -> Candle | dict[str, Any]:
    """Raw bytes -> Candle, or a dead letter naming why and where."""
    try:
        raw = orjson.loads(value) if isinstance(value, bytes | bytearray | str) else value
        return candle_from_raw(raw)
    except (orjson.JSONDecodeError, MalformedKlineError) as exc:
        payload = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
        DEAD_LETTERS.labels(stage="decode").inc()
        return {
            "kind": "dead",
            "reason": str(exc),
            "source": _position(),
            "stage": "candles.decode",
            "payload": payload[:10_000],
            "at": int(time.time() * 1000),
        }


def make_step(machine: CandleStateMachine, resampler: Resampler | None = None) -> Any:
    """The stateful step. With a resampler, each new or repaired closed 1m candle also updates
    the higher intervals, in the same key's state (the resampler's keys do not collide with the
    state machine's), and the higher candles it completes go back to the raw topic."""

    def apply_candle(item: Candle | dict[str, Any], state: State[Any, Any]) -> list[dict[str, Any]]:
        if isinstance(item, dict):
            return [item]
        _child(KLINES_PROCESSED, item.interval).inc()
        outs = machine.apply(item, state)
        higher: list[dict[str, Any]] = []
        for o in outs:
            if o["kind"] == "event":
                _child(EVENTS_EMITTED, o["type"], o["interval"]).inc()
                if o["type"] == "partial_close":
                    PARTIAL_CLOSE_LATENCY.observe(o["latency_ms"])
                elif o["type"] == "append" and o["late"]:
                    LATE_FILLS.inc()
                if resampler is not None and item.interval == "1m":
                    for c in candles_of_event(o):
                        higher.extend({"kind": "raw", **r} for r in resampler.apply(item.symbol, c, state))
        return outs + higher if higher else outs

    return apply_candle


def _is_event(o: dict[str, Any]) -> bool:
    return bool(o["kind"] == "event")


def _is_dead(o: dict[str, Any]) -> bool:
    return bool(o["kind"] == "dead")


def _is_stored(o: dict[str, Any]) -> bool:
    return bool(o["kind"] in ("event", "segment", "candle"))


def _is_raw(o: dict[str, Any]) -> bool:
    return bool(o["kind"] == "raw")


def _raw_value(o: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = o["value"]
    return value


def _raw_key(value: dict[str, Any]) -> str:
    return f"{value['event']['s']}:{value['event']['k']['i']}"


def _strip_kind(o: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in o.items() if k != "kind"}


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
    """Wire the candle steps onto ``sdf`` (the raw kline topic). Returns the outputs frame."""
    out = sdf.apply(decode).apply(make_step(machine, resampler), stateful=True, expand=True)
    out.filter(_is_event).apply(_strip_kind).to_topic(events_topic)
    out.filter(_is_dead).apply(_strip_kind).to_topic(deadletter_topic)
    if resampler is not None:
        if raw_topic is None:
            raise ValueError("resampling needs the raw topic to send higher candles to")
        out.filter(_is_raw).apply(_raw_value).to_topic(raw_topic, key=_raw_key)
    if sink is not None:
        out.filter(_is_stored).sink(sink)
    return out
