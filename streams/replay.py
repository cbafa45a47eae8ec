"""Replay of candles onto the raw kline topic, as fast as possible or as a live market.

Each candle becomes a raw-topic record exactly as a websocket kline would be: key
``stream_key(symbol, interval)``, value ``schemas.klines.raw_from_candle``. Optionally each
close is preceded by ``partials`` in-progress updates (``x: false``) derived from the final
candle (``partial_updates``), so a consumer sees the same shape of traffic as from Binance.

Two ways to run it:

- ``replay_to_kafka(address, candles, ...)``: a plain idempotent producer, for bulk replays
  (as fast as the broker takes them) and for paced replays from the CLI;
- ``CandleReplaySource``: a Quix Streams ``Source`` reading files, for a live-speed replay
  inside an ``Application`` next to the topologies (the demo market).

Pacing: with ``speed`` (e.g. 60 = one market minute per wall second) each record is sent when
``(event_time - first_event_time) / speed`` has elapsed; gaps in the data are waited out, as
the live market would. Partitioning is murmur2 on the key, as Quix Streams' producer does, so
replayed and live records of one stream share a partition and stay in order.

Provenance: the value's ``source`` is the caller's choice; ``"import"`` for a history file
pushed through Kafka, ``"replay"`` for a simulated live market (the default of the Source).
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from quixstreams.sources import Source

from ohlcv.errors import OhlcvError
from schemas.events import DeadLetter
from schemas.intervals import interval_ms
from schemas.klines import MAX_BATCH, Candle, raw_batch, raw_from_candle, stream_key
from schemas.topics import DEAD_LETTER, RAW_KLINES
from streams.importers import BadRow, guess_market, read_candles
from streams.raw_source import RawTopicSourceMixin

logger = logging.getLogger(__name__)

#: producer settings of every replay: idempotent (no duplicates or reordering on broker-side
#: retries) and murmur2 partitioning, the partitioner Quix Streams' producer uses
PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "partitioner": "murmur2",
    "linger.ms": 20,
}
STAGE_IMPORT = "import.parse"

Progress = Callable[[int], None]


class ReplayError(OhlcvError):
    """Records could not be delivered to the broker; names the topic and the broker's error."""


# --- what is sent ---------------------------------------------------------------------------


def _decimals(*values: float) -> int:
    """Decimals of the most precise value, as Binance prints it (at most 8)."""
    best = 0
    for v in values:
        text = repr(v)
        if "e" in text or "E" in text:
            return 8
        best = max(best, len(text.partition(".")[2].rstrip("0")))
    return min(best, 8)


def partial_updates(candle: Candle, n: int) -> list[Candle]:
    """``n`` in-progress versions of a closed candle, in time order, converging to it.

    The price walks open -> low -> high -> close for a rising bar (open -> high -> low -> close
    for a falling one) in three equal thirds of the interval; update k of n sits at fraction
    k / (n + 1) of the walk. Its close is the walk's price there, its high/low the extremes seen
    so far, volume, quote volume, taker volumes and trade count the same fraction of the final
    (unknown fields stay None). Prices and volumes keep the final candle's decimals. Every
    update is a valid kline (low <= open, close <= high), highs only rise and lows only fall
    from one update to the next, and the close that follows is the candle itself.
    """
    if n <= 0:
        return []
    step = interval_ms(candle.interval)
    o, h, low, c = candle.open, candle.high, candle.low, candle.close
    walk = [o, low, h, c] if c >= o else [o, h, low, c]
    price_dp = _decimals(o, h, low, c)
    out = []
    for k in range(1, n + 1):
        f = k / (n + 1)
        pos = 3 * f
        seg = min(int(pos), 2)
        t = pos - seg
        price = round(walk[seg] + (walk[seg + 1] - walk[seg]) * t, price_dp)
        price = min(max(price, low), h)
        seen = [*walk[: seg + 1], price]

        def part(x: float | None, f: float = f) -> float | None:
            return None if x is None else round(x * f, _decimals(x))

        volume = part(candle.volume)
        assert volume is not None
        out.append(
            replace(
                candle,
                high=max(seen),
                low=min(seen),
                close=price,
                volume=volume,
                quote_volume=part(candle.quote_volume),
                trades=None if candle.trades is None else math.floor(candle.trades * f),
                taker_buy_base=part(candle.taker_buy_base),
                taker_buy_quote=part(candle.taker_buy_quote),
                is_closed=False,
                event_time=candle.open_time + int(step * f),
                received_at=0,
            )
        )
    return out


def replay_events(candles: Iterable[Candle], partials: int = 0) -> Iterator[Candle]:
    """Each candle preceded by ``partials`` in-progress updates (closed candles only get them)."""
    for c in candles:
        if partials and c.is_closed:
            yield from partial_updates(c, partials)
        yield c


def event_time(c: Candle) -> int:
    """When the market would have sent this record (ms)."""
    return c.event_time or (c.close_time if c.is_closed else c.open_time)


def merge_by_time(streams: Iterable[Iterable[Candle]]) -> Iterator[Candle]:
    """Several time-ordered candle streams as one, ordered by open time (live-market order)."""
    return heapq.merge(*streams, key=lambda c: (c.open_time, c.symbol, c.interval))


def kline_record(c: Candle, *, source: str, market: str, received_at: int) -> tuple[bytes, bytes]:
    """(key, value) bytes of the raw-topic record for ``c``."""
    value = raw_from_candle(c, source=source, received_at=received_at, market=market)
    return stream_key(c.symbol, c.interval).encode(), orjson.dumps(value)


def dead_letter_record(bad: BadRow, *, stage: str = STAGE_IMPORT) -> tuple[bytes, bytes]:
    """(key, value) bytes of the dead-letter record for a refused file row; key is the file name."""
    value = DeadLetter(
        reason=bad.reason,
        source=bad.source,
        stage=stage,
        payload=bad.payload,
        at=int(time.time() * 1000),
    )
    return Path(bad.path).name.encode(), value.model_dump_json().encode()


# --- pacing ---------------------------------------------------------------------------------


def paced(
    events: Iterable[Candle],
    speed: float | None,
    *,
    stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    max_sleep_s: float = 0.2,
) -> Iterator[Candle]:
    """Yield ``events`` no sooner than their market time allows at ``speed`` (None: at once).

    Stops early, between events or during a wait, once ``stop()`` is true.
    """
    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    anchor: tuple[float, int] | None = None
    for ev in events:
        if stop is not None and stop():
            return
        if speed is not None:
            t = event_time(ev)
            if anchor is None:
                anchor = (clock(), t)
            due = anchor[0] + (t - anchor[1]) / 1000.0 / speed
            while (wait := due - clock()) > 0:
                if stop is not None and stop():
                    return
                sleep(min(wait, max_sleep_s))
        yield ev


# --- producing ------------------------------------------------------------------------------


class RawProducer:
    """A confluent-kafka producer with the replay settings, delivery checks and BufferError retry."""

    def __init__(
        self, address: str, *, config: dict[str, Any] | None = None, flush_timeout_s: float = 30.0
    ) -> None:
        self.address = address
        self.flush_timeout_s = flush_timeout_s
        self._producer = Producer({"bootstrap.servers": address, **PRODUCER_CONFIG, **(config or {})})
        self.delivered = 0
        self._error: tuple[str, str] | None = None

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            if self._error is None:
                self._error = (str(msg.topic()), str(err))
        else:
            self.delivered += 1

    def produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
            except BufferError:
                self._producer.poll(0.05)
                continue
            self._producer.poll(0)
            self._raise_if_failed()
            return

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            topic, err = self._error
            raise ReplayError(f"producing to {topic} at {self.address} failed: {err}")

    def connect(self, topic: str, timeout_s: float = 10.0) -> None:
        """Reach the broker and learn ``topic``'s partitions now: a new (idempotent) producer's
        first delivery otherwise waits for its connection and producer id, ~0.5 s on Tansu."""
        try:
            self._producer.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:
            raise ReplayError(f"reaching {self.address} for topic {topic} failed: {exc}") from exc

    def flush(self) -> None:
        """Wait until every record is delivered; ReplayError if any failed or the wait timed out."""
        remaining = self._producer.flush(self.flush_timeout_s)
        self._raise_if_failed()
        if remaining:
            raise ReplayError(
                f"{remaining} records not delivered to {self.address} within {self.flush_timeout_s:.0f}s"
            )


@dataclass(frozen=True)
class ReplayResult:
    """What a replay sent: closed candles, in-progress updates, and how long it took."""

    closed: int
    partial: int
    elapsed_s: float

    @property
    def records(self) -> int:
        return self.closed + self.partial


def replay_to_kafka(
    address: str,
    candles: Iterable[Candle],
    *,
    topic: str = RAW_KLINES.name,
    partials: int = 0,
    speed: float | None = None,
    source: str | None = None,
    market: str = "spot",
    on_progress: Progress | None = None,
    progress_every: int = 1000,
    stop: Callable[[], bool] | None = None,
    producer: RawProducer | None = None,
    batch: int | None = None,
) -> ReplayResult:
    """Produce ``candles`` (with ``partials`` updates before each close) to ``topic``.

    Consecutive closed candles of one stream travel as batch records of up to ``batch`` klines
    (``schemas.klines.raw_batch``; default: MAX_BATCH when unpaced, 1 when paced, so a paced
    market looks like the websocket's one record per kline).

    ``speed`` None sends as fast as the broker takes them; otherwise market time runs ``speed``
    times faster than the wall clock. ``source`` None keeps each candle's own (``import`` for
    file candles). ``on_progress(n)`` is told every ``progress_every`` closed candles, and at
    the end, how many more were sent. Returns once every record is delivered (ReplayError if
    one was not). Pass ``producer`` to share one (e.g. with dead letters); it is flushed here.
    """
    own = producer or RawProducer(address)
    size = (MAX_BATCH if speed is None else 1) if batch is None else max(1, min(batch, MAX_BATCH))
    started = time.perf_counter()
    closed = partial = unreported = 0
    pending: list[Candle] = []

    def send_pending() -> None:
        if not pending:
            return
        c0, now = pending[0], int(time.time() * 1000)
        src = source or c0.source
        if len(pending) == 1:
            key, value = kline_record(c0, source=src, market=market, received_at=now)
        else:
            key = stream_key(c0.symbol, c0.interval).encode()
            value = orjson.dumps(raw_batch(pending, source=src, received_at=now, market=market))
        own.produce(topic, key, value)
        pending.clear()

    for c in paced(replay_events(candles, partials), speed, stop=stop):
        if not c.is_closed:
            send_pending()
            key, value = kline_record(
                c, source=source or c.source, market=market, received_at=int(time.time() * 1000)
            )
            own.produce(topic, key, value)
            partial += 1
            continue
        if pending and (c.key != pending[0].key or (source or c.source) != (source or pending[0].source)):
            send_pending()
        pending.append(c)
        if len(pending) >= size:
            send_pending()
        closed += 1
        unreported += 1
        if on_progress is not None and unreported >= progress_every:
            on_progress(unreported)
            unreported = 0
    send_pending()
    own.flush()
    if on_progress is not None and unreported:
        on_progress(unreported)
    result = ReplayResult(closed=closed, partial=partial, elapsed_s=time.perf_counter() - started)
    logger.info(
        "replay topic=%s closed=%d partial=%d elapsed_s=%.2f",
        topic,
        result.closed,
        result.partial,
        result.elapsed_s,
    )
    return result


def send_dead_letters(
    address: str,
    rows: Sequence[BadRow],
    *,
    topic: str = DEAD_LETTER.name,
    stage: str = STAGE_IMPORT,
    producer: RawProducer | None = None,
) -> int:
    """Produce refused file rows to the dead-letter topic; returns how many were sent."""
    own = producer or RawProducer(address)
    for bad in rows:
        key, value = dead_letter_record(bad, stage=stage)
        own.produce(topic, key, value)
    own.flush()
    return len(rows)


# --- the Quix Streams source ----------------------------------------------------------------


class CandleReplaySource(RawTopicSourceMixin, Source):
    """History files replayed as a live market, inside a Quix Streams ``Application``.

    Files are read in the source process and merged by open time; records are paced by
    ``speed`` (None: as fast as possible). Add it with the raw topic (Quix prefixes a *default*
    topic's name with ``source__``)::

        source = CandleReplaySource(["data/freqtrade/binance/XRP_USDT-1m.json"], speed=60, partials=3)
        source.add_to(app)          # == app.add_source(source, topic=source.topic(app))

    Rows that cannot be read go to ``dead_letter_topic`` in mode ``dead-letter``; in ``strict``
    mode they stop the source with ImportFileError. Topics must exist (``ensure_topics``).
    ``market`` applies to every record; by default it is guessed from the first file's path.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        name: str = "candle-replay",
        symbol: str | None = None,
        interval: str | None = None,
        speed: float | None = 60.0,
        partials: int = 0,
        source: str = "replay",
        market: str | None = None,
        mode: str = "strict",
        raw_topic: str = RAW_KLINES.name,
        dead_letter_topic: str = DEAD_LETTER.name,
        shutdown_timeout: float = 10.0,
    ) -> None:
        super().__init__(name=name, shutdown_timeout=shutdown_timeout)
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        if mode not in ("strict", "dead-letter"):
            raise ValueError(f"mode {mode!r} is not strict or dead-letter")
        self.paths = [str(p) for p in paths]
        self.symbol = symbol
        self.interval = interval
        self.speed = speed
        self.partials = partials
        self.source = source
        self.market = market
        self.mode = mode
        self.raw_topic = raw_topic
        self.dead_letter_topic = dead_letter_topic
        self.closed_sent = 0

    def _dead_letter(self, bad: BadRow) -> None:
        key, value = dead_letter_record(bad)
        self.producer.produce(topic=self.dead_letter_topic, key=key, value=value)

    def run(self) -> None:
        market = self.market or (guess_market(self.paths[0]) if self.paths else "spot")
        streams = [
            read_candles(
                p,
                symbol=self.symbol,
                interval=self.interval,
                mode=self.mode,
                on_bad_row=self._dead_letter if self.mode == "dead-letter" else None,
            )
            for p in self.paths
        ]
        for c in paced(
            replay_events(merge_by_time(streams), self.partials),
            self.speed,
            stop=lambda: not self.running,
        ):
            now = int(time.time() * 1000)
            value = raw_from_candle(c, source=self.source, received_at=now, market=market)
            self.produce(
                key=stream_key(c.symbol, c.interval).encode(), value=orjson.dumps(value), timestamp=now
            )
            if c.is_closed:
                self.closed_sent += 1
        logger.info("replay source=%s finished closed=%d", self.name, self.closed_sent)
