"""What makes the gap orchestrator act at once instead of at its next ClickHouse poll.

- ``gap_detected`` and ``gap_repaired`` events on ``ohlcv.candle.events`` (the topology's): a
  detected segment is fetched from the event alone (its ``gap_segments`` row reaches ClickHouse
  only at the topology's next checkpoint), a repaired one closes its attempt.
- ``ohlcv.gap.queue`` (``schemas.topics.GapQueued``): segments a continuity scan wrote into
  ``gap_segments`` while the stack runs (the scheduled scan, ``ohlcv scan --queue-missing``).
  The running topology seeds its open segments from ClickHouse only at a stream's first record,
  so it never hears of these; without the notice they would wait for the orchestrator's poll.

``TriggerConsumer`` reads both topics from their end (what came before is in ClickHouse, which
the orchestrator reads at start) and hands each trigger to the orchestrator; ``GapNotifier``
is the scan's side.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
from confluent_kafka import Consumer, KafkaException, Producer
from pydantic import ValidationError

from ohlcv.errors import BrokerUnavailableError
from ohlcv.infra.kafka import assign_from_end
from schemas.topics import CANDLE_EVENTS, GAP_QUEUE, GapQueued

logger = logging.getLogger(__name__)

TriggerKind = Literal["gap_detected", "gap_repaired", "scan"]


@dataclass(frozen=True, slots=True)
class Trigger:
    """One segment to act on (times in ms)."""

    kind: TriggerKind
    symbol: str
    interval: str
    segment_id: int
    from_open_time: int
    to_open_time: int
    missing_bars: int
    detected_at: int
    repaired_at: int | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.symbol, self.interval, self.segment_id)


def parse_trigger(topic: str, value: bytes, events_topic: str = CANDLE_EVENTS.name) -> Trigger | None:
    """The trigger a record carries; None for every other event (most of the topic) and for a
    record that is not what its topic promises (logged by the caller)."""
    if topic == events_topic:
        if b"gap_" not in value:  # the cheap test first: partial updates and appends are the flood
            return None
        try:
            ev = orjson.loads(value)
            kind = ev.get("type")
            if kind not in ("gap_detected", "gap_repaired"):
                return None
            repaired = kind == "gap_repaired"
            return Trigger(kind, ev["symbol"], ev["interval"], int(ev["segment_id"]),
                           int(ev["from_open_time"]), int(ev["to_open_time"]), int(ev["missing_bars"]),
                           int(ev["detected_at"] if repaired else ev["emitted_at"]),
                           int(ev["repaired_at"]) if repaired else None)  # fmt: skip
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None
    try:
        q = GapQueued.model_validate_json(value)
    except ValidationError:
        return None
    return Trigger("scan", q.symbol, q.interval, q.segment_id, q.from_open_time, q.to_open_time,
                   q.missing_bars, q.queued_at)  # fmt: skip


class TriggerConsumer(threading.Thread):
    """Reads ``topics`` (the candle events and the gap queue) from their end and calls
    ``on_triggers`` with each batch's triggers, and ``on_ready`` once partitions are assigned.

    No consumer group coordination (partitions are assigned, not subscribed): one orchestrator
    per deployment, and a join would cost seconds on the embedded broker. ``stop()`` ends it."""

    def __init__(
        self,
        broker_address: str,
        on_triggers: Callable[[list[Trigger]], None],
        *,
        events_topic: str = CANDLE_EVENTS.name,
        queue_topic: str = GAP_QUEUE.name,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="gap-triggers", daemon=True)
        self.broker_address = broker_address
        self.on_triggers = on_triggers
        self.on_ready = on_ready
        self.events_topic = events_topic
        self.topics = (events_topic, queue_topic)
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self.received = 0

    def run(self) -> None:
        consumer = Consumer({
            "bootstrap.servers": self.broker_address, "group.id": f"ohlcv-gap-triggers-{id(self):x}",
            "enable.auto.commit": False, "enable.partition.eof": False, "fetch.wait.max.ms": 10,
        })  # fmt: skip
        try:
            while not self._stopping.is_set():
                try:
                    assign_from_end(consumer, self.topics)
                    break
                except (BrokerUnavailableError, KafkaException) as exc:
                    logger.warning("gap trigger consumer waiting for %s: %s", self.topics, exc)
                    self._stopping.wait(1.0)
            self.ready.set()
            if self.on_ready is not None:
                self.on_ready()
            logger.info("gap trigger consumer ready topics=%s", ",".join(self.topics))
            while not self._stopping.is_set():
                first = consumer.poll(0.1)
                if first is None:
                    continue
                triggers = []
                for m in [first, *consumer.consume(num_messages=999, timeout=0)]:
                    if m.error() is not None:
                        logger.warning("gap trigger consumer error: %s", m.error())
                        continue
                    t = parse_trigger(m.topic(), m.value() or b"", self.events_topic)
                    if t is not None:
                        triggers.append(t)
                    elif m.topic() != self.events_topic:
                        logger.warning("not a gap notice %s[%s]@%s", m.topic(), m.partition(), m.offset())
                if triggers:
                    self.received += len(triggers)
                    self.on_triggers(triggers)
        finally:
            with contextlib.suppress(Exception):
                consumer.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout_s)


class GapNotifier:
    """The scan's side: announces segments it wrote on ``ohlcv.gap.queue`` (keyed like the
    stream). ``notify`` flushes: the segments are in ClickHouse already, a lost notice costs only
    the wait for the orchestrator's poll."""

    def __init__(self, broker_address: str, topic: str = GAP_QUEUE.name) -> None:
        self.topic = topic
        self._producer = Producer({"bootstrap.servers": broker_address, "linger.ms": 1})

    def notify(self, symbol: str, interval: str, segments: Sequence[tuple[int, int, int, int]]) -> int:
        """Announce (segment_id, from_open_time, to_open_time, missing_bars) of each; returns how
        many were delivered."""
        now = int(time.time() * 1000)
        delivered = 0

        def _done(err: object, _msg: object) -> None:
            nonlocal delivered
            if err is None:
                delivered += 1
            else:
                logger.warning("gap notice to %s not delivered: %s", self.topic, err)

        for sid, frm, to, missing in segments:
            value = GapQueued(symbol=symbol, interval=interval, segment_id=sid, from_open_time=frm,
                              to_open_time=to, missing_bars=missing, queued_at=now)  # fmt: skip
            self._producer.produce(self.topic, key=f"{symbol}:{interval}", value=value.model_dump_json(),
                                   on_delivery=_done)  # fmt: skip
        self._producer.flush(10)
        return delivered
