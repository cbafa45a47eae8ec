"""The per-process live event fan-out: ONE Kafka consumer, many WebSocket subscribers.

Each API process owns one ``EventHub``. Its consumer runs in a background thread with a group id
of its own (so several API processes side by side each see every event), assigns every
partition of the events topic at the current end (``auto.offset.reset=latest``; nothing is
committed) and hands each batch of events to the event loop with ``loop.call_soon_threadsafe``.
On the loop the hub puts each event into the bounded queue of every subscriber of its
``SYMBOL:interval`` key with ``put_nowait``: one slow client can never delay the consumer or the
other clients; a full queue marks that subscriber ``overflowed`` and it gets nothing more (the
session closes it with 4408).

The consumer starts with the first subscriber (REST-only processes never touch Kafka) and stops
with the app. For every key with subscribers the hub keeps the newest events in a small ring,
so a new session of that key can close a seq gap at the snapshot seam without asking ClickHouse.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

logger = logging.getLogger(__name__)

#: newest events kept per subscribed key for seam gap fills
RING_SIZE = 1024
#: most events handed to the loop at once; a client queue must hold more than one batch
_BATCH = 256


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One candle event as it arrived: its seq and type, and the JSON text sent to clients."""

    key: str
    seq: int
    type: str
    text: str
    #: the parsed event
    data: Any = None


@dataclass(eq=False)
class Subscription:
    key: str
    queue: asyncio.Queue[LiveEvent]
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)


def parse_event(key: bytes | str | None, value: bytes) -> LiveEvent | None:
    """A LiveEvent from a record of the events topic, or None when it is not a candle event."""
    try:
        ev: Any = orjson.loads(value)
        seq = int(ev["seq"])
        etype = str(ev["type"])
        k = f"{ev['symbol']}:{ev['interval']}"
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return LiveEvent(key=k, seq=seq, type=etype, text=value.decode(), data=ev)


def parse_feature_row(key: bytes | str | None, value: bytes) -> LiveEvent | None:
    """A ``features`` LiveEvent from a record of ``ohlcv.features`` (the row, with
    ``"type": "features"``), or None when it is not a feature row. Feature events carry no seq
    of their own (seq 0: the hub keeps no ring of them); the row's ``event_seq`` names the
    candle event behind it."""
    try:
        row: Any = orjson.loads(value)
        k = f"{row['symbol']}:{row['interval']}"
        row["open_time"] = int(row["open_time"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    row["type"] = "features"
    return LiveEvent(key=k, seq=0, type="features", text=orjson.dumps(row).decode(), data=row)


#: the one hub key of news stories: every session that asks for news subscribes to it and
#: keeps the stories of its symbol (or all of them)
NEWS_KEY = "news"


def parse_news_article(key: bytes | str | None, value: bytes) -> LiveEvent | None:
    """A ``news`` LiveEvent from a record of ``news.articles`` (the story, with
    ``"type": "news"``), or None when it is not a story. Not sequenced (seq 0)."""
    try:
        a: Any = orjson.loads(value)
        if not isinstance(a, dict) or "article_id" not in a or not isinstance(a.get("symbols"), list):
            return None
    except orjson.JSONDecodeError:
        return None
    a["type"] = "news"
    return LiveEvent(key=NEWS_KEY, seq=0, type="news", text=orjson.dumps(a).decode(), data=a)


class EventHub:
    """See the module docstring. Construct on the event loop; every method but the consumer
    thread's runs on that loop."""

    def __init__(
        self,
        broker_address: str,
        topic: str,
        *,
        consumer_config: dict[str, Any] | None = None,
        ring_size: int = RING_SIZE,
        parse: Callable[[bytes | str | None, bytes], LiveEvent | None] = parse_event,
    ):
        self.broker_address = broker_address
        self.topic = topic
        self.group_id = f"ohlcv-api-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.consumer_config = consumer_config or {}
        self.ring_size = ring_size
        self.parse = parse
        self._subs: dict[str, set[Subscription]] = collections.defaultdict(set)
        #: keys whose ring is kept without a subscriber (api.recent_book)
        self._tracked: set[str] = set()
        #: called on the loop with (key, parsed event) for every event received
        self.listeners: list[Callable[[str, Any], None]] = []
        self._rings: dict[str, collections.OrderedDict[int, LiveEvent]] = {}
        self._latest: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = asyncio.Event()
        self._started_at = 0.0
        self.events_received = 0
        self.last_error: str = ""

    # --- state --------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def ready(self) -> bool:
        """Partitions are assigned: every event published from now on reaches the subscribers."""
        return self._ready.is_set()

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subs.values())

    # --- subscribers --------------------------------------------------------------------
    def subscribe(self, key: str, maxsize: int) -> Subscription:
        """Start buffering events of ``key`` for a new client (starts the consumer if needed)."""
        sub = Subscription(key=key, queue=asyncio.Queue(maxsize=maxsize))
        self._subs[key].add(sub)
        self._ensure_started()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]
                if sub.key not in self._tracked:
                    self._rings.pop(sub.key, None)

    def track(self, key: str) -> None:
        """Keep the newest events of ``key`` in the ring without a subscriber (starts the consumer)."""
        self._tracked.add(key)
        self._ensure_started()

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait until partitions are assigned, at most until ``timeout_s`` after the consumer started.

        Only the first clients of a process wait; if the broker or topic is missing they go on
        without live events (a seq hole is filled from ClickHouse once events flow).
        """
        remaining = self._started_at + timeout_s - time.monotonic()
        if self._thread is not None and not self._ready.is_set() and remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), remaining)
        return self._ready.is_set()

    def latest_seq(self, key: str) -> int:
        """Highest seq of ``key`` this process has received live (0 when none yet)."""
        return self._latest.get(key, 0)

    def recent(self, key: str, after: int, before: int) -> list[LiveEvent]:
        """Events of ``key`` held in the ring with after < seq < before, ascending."""
        ring = self._rings.get(key)
        if not ring:
            return []
        if before - after > len(ring):
            return [ring[s] for s in sorted(ring) if after < s < before]
        return [ring[s] for s in range(after + 1, before) if s in ring]

    # --- dispatch (event loop) ----------------------------------------------------------
    def dispatch(self, batch: Iterable[LiveEvent]) -> None:
        for ev in batch:
            self.events_received += 1
            if ev.seq > self._latest.get(ev.key, 0):
                self._latest[ev.key] = ev.seq
            for listener in self.listeners:
                listener(ev.key, ev.data)
            subs = self._subs.get(ev.key)
            if not subs and ev.key not in self._tracked:
                continue  # rings are kept for subscribed and tracked keys only (memory stays bounded)
            ring = self._rings.get(ev.key)
            if ring is None:
                ring = self._rings[ev.key] = collections.OrderedDict()
            ring[ev.seq] = ev
            if len(ring) > self.ring_size:
                ring.popitem(last=False)
            for sub in subs or ():
                if sub.overflowed.is_set():
                    continue
                try:
                    sub.queue.put_nowait(ev)
                except asyncio.QueueFull:
                    sub.overflowed.set()

    # --- the consumer thread ------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        if not self.broker_address:
            if not self.last_error:
                self.last_error = "no broker address configured: live events are off"
                logger.warning("websocket live events are off: the API was started without a broker address")
            return
        self._loop = asyncio.get_running_loop()
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="ohlcv-api-events", daemon=True)
        self._thread.start()
        logger.info("event consumer starting topic=%s group=%s", self.topic, self.group_id)

    def _config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.broker_address,
            "group.id": self.group_id,
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 10,
            "session.timeout.ms": 6000,
            **self.consumer_config,
        }

    def _partitions(self, consumer: Consumer) -> list[int] | None:
        """Partition ids of the topic, waiting (and retrying) until it exists; None when stopped."""
        warned = False
        while not self._stop.is_set():
            try:
                md = consumer.list_topics(self.topic, timeout=5)
                t = md.topics.get(self.topic)
                if t is not None and t.error is None and t.partitions:
                    return sorted(t.partitions)
                self.last_error = f"topic {self.topic} has no partitions yet"
            except KafkaException as exc:
                self.last_error = f"broker {self.broker_address} unreachable: {exc}"
            if not warned:
                logger.warning("event consumer waiting: %s", self.last_error)
                warned = True
            self._stop.wait(1.0)
        return None

    def _assign(self, consumer: Consumer, partitions: list[int]) -> None:
        # Positions are fixed now (not at the first fetch): every event published after this
        # point is delivered. A broker that reports a low watermark makes us re-read a few old
        # events, which sessions drop by seq.
        tps = []
        for p in partitions:
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5)
                tps.append(TopicPartition(self.topic, p, high))
            except KafkaException:
                tps.append(TopicPartition(self.topic, p, OFFSET_END))
        consumer.assign(tps)

    def _run(self) -> None:
        assert self._loop is not None
        loop = self._loop
        consumer = Consumer(self._config())
        try:
            partitions = self._partitions(consumer)
            if partitions is None:
                return
            self._assign(consumer, partitions)
            loop.call_soon_threadsafe(self._ready.set)
            self.last_error = ""
            logger.info("event consumer ready topic=%s partitions=%d", self.topic, len(partitions))
            while not self._stop.is_set():
                # poll waits for the first record only; consume(timeout=0) then takes what is
                # already fetched (consume with a timeout would hold a partial batch that long)
                first = consumer.poll(0.1)
                if first is None:
                    continue
                msgs = [first, *consumer.consume(num_messages=_BATCH - 1, timeout=0)]
                batch = []
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        self.last_error = str(err)
                        logger.warning("event consumer error topic=%s: %s", self.topic, err)
                        continue
                    ev = self.parse(m.key(), m.value())
                    if ev is None:
                        logger.warning(
                            "not a candle event topic=%s[%s]@%s", m.topic(), m.partition(), m.offset()
                        )
                        continue
                    batch.append(ev)
                if batch:
                    try:
                        loop.call_soon_threadsafe(self.dispatch, batch)
                    except RuntimeError:  # the loop is closed: the app is shutting down
                        return
        except Exception as exc:
            self.last_error = f"event consumer failed: {exc}"
            logger.exception("event consumer failed topic=%s", self.topic)
        finally:
            with contextlib.suppress(Exception):
                consumer.close()

    async def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            t0 = time.monotonic()
            await asyncio.to_thread(thread.join, timeout_s)
            logger.info("event consumer stopped in %.2fs", time.monotonic() - t0)
