"""The live Binance kline websocket: an asyncio client, and a thin Quix Streams ``Source`` over it.

``KlineStreamClient`` (independent of Quix, testable alone) keeps combined-stream connections
``<base>/stream?streams=a/b/...`` open for every configured (symbol, interval):

- at most ``max_streams_per_connection`` (Binance: 1024) streams per connection; beyond that
  the streams are sharded over several connections;
- ``update_streams`` changes the set live with ``SUBSCRIBE``/``UNSUBSCRIBE`` (paced under
  Binance's 5 control messages a second) and waits for each ``{"result": null, "id": N}``;
  an error answer makes that connection reconnect with its current set (reason
  ``resubscribe``);
- pings are answered by the websockets library; the client pings too (half-open TCP);
- a connection that delivers no message for ``silence_timeout_s`` is dead (reason ``silent``);
- before Binance's 24 h cut it rolls over on its own after ``lifetime_s`` (default 23 h 50 min,
  reason ``lifetime``) make-before-break: the new connection is opened first, both are read
  for ``handover_s`` with identical frames dropped once, then the old one is closed, so no
  closed candle is lost in the rollover;
- any other loss (``server_closed``, ``connection_lost``) reconnects with exponential back-off
  and jitter; each loss is logged and counted with its reason.

Every kline frame becomes a ``KlineRecord``: key ``SYMBOL:interval``, value
``{"source": "ws", "market", "received_at": ms, "event": <Binance's data object as sent>}``,
validated with ``schemas.klines.candle_from_raw``. Anything else that is not a control answer
(bad JSON, a binary frame, a frame without the combined-stream envelope, an event that is not
a kline, a kline the contract rejects, a kline on the wrong stream) becomes a
``DeadLetterRecord`` in the ``schemas.events.DeadLetter`` shape, with source
``ws:<stream>@<conn>#<msgno>``; it is counted and the stream goes on.

``BinanceKlineSource`` runs the client inside a Quix ``Application`` (in the source's own
process): klines go to the source's topic (the raw topic, ``binance.kline.raw`` unless told
otherwise), dead letters to ``dead_letter_topic`` through the same producer.

Idempotent producer: a Quix source produces with the Application's producer configuration, so
``enable.idempotence`` is set where the runner builds the Application:
``Application(..., producer_extra_config=PRODUCER_EXTRA_CONFIG)``. Broker-side retries then
never duplicate or reorder a stream's records within a partition.

Metrics (prometheus_client, in the process that runs the client; for a Quix source that is
the source process, which serves them when given ``metrics_port``): ``ingestion_lag_seconds``
{symbol, interval}, ``binance_ws_messages_total`` {symbol, interval},
``binance_ws_reconnects_total`` {reason}, ``binance_ws_deadletter_total`` {reason}.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import queue
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson
from prometheus_client import Counter, Gauge, start_http_server
from quixstreams.sources import Source
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from schemas.intervals import interval_ms
from schemas.klines import Candle, MalformedKlineError, candle_from_raw, stream_key
from schemas.topics import DEAD_LETTER, RAW_KLINES
from streams.raw_source import RawTopicSourceMixin

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

WsMarket = Literal["spot", "usdm"]
MAX_STREAMS_PER_CONNECTION = 1024
#: what the runner passes as ``Application(producer_extra_config=...)``
PRODUCER_EXTRA_CONFIG: dict[str, Any] = {"enable.idempotence": True}
STAGE_DECODE = "binance_ws.decode"
STAGE_VALIDATE = "binance_ws.validate"
_VALIDATE_REASONS = frozenset({"malformed_kline", "stream_mismatch"})
_MAX_PAYLOAD_CHARS = 100_000

INGESTION_LAG = Gauge(
    "ingestion_lag_seconds", "Receive time minus Binance event time", ["symbol", "interval"]
)
MESSAGES = Counter("binance_ws_messages_total", "Kline messages received", ["symbol", "interval"])
RECONNECTS = Counter("binance_ws_reconnects_total", "Websocket connections replaced", ["reason"])
DEAD_LETTERS = Counter("binance_ws_deadletter_total", "Frames sent to the dead-letter topic", ["reason"])


def kline_stream(symbol: str, interval: str) -> str:
    """Binance stream name: ``xrpusdt@kline_1m``."""
    return f"{symbol.lower()}@kline_{interval}"


def parse_kline_stream(name: str) -> tuple[str, str] | None:
    """``xrpusdt@kline_1m`` -> ``("XRPUSDT", "1m")``; None for anything else."""
    symbol, sep, kind = name.partition("@kline_")
    if not sep or not symbol or not kind:
        return None
    return symbol.upper(), kind


@dataclass(frozen=True)
class WsConfig:
    """Connection policy; the defaults are Binance's production limits."""

    max_streams_per_connection: int = MAX_STREAMS_PER_CONNECTION
    #: no message for this long: the connection is dead
    silence_timeout_s: float = 60.0
    #: roll over before Binance's 24 h cut
    lifetime_s: float = 23 * 3600 + 50 * 60
    #: both connections are read this long in a rollover
    handover_s: float = 2.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    open_timeout_s: float = 10.0
    ack_timeout_s: float = 10.0
    #: at least this long between control messages on one connection (Binance: 5/s spot)
    control_interval_s: float = 0.25
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0


@dataclass(frozen=True, slots=True)
class KlineRecord:
    """A kline for the raw topic."""

    key: str
    value: dict[str, Any]
    candle: Candle


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A frame for the dead-letter topic (``schemas.events.DeadLetter`` shape)."""

    key: str
    value: dict[str, Any]
    reason: str


WsRecord = KlineRecord | DeadLetterRecord


@dataclass
class WsStats:
    """What one client did; the prometheus metrics carry the same per process."""

    messages: int = 0
    connects: int = 0
    connect_failures: int = 0
    acks: int = 0
    duplicates_dropped: int = 0
    reconnects: collections.Counter[str] = field(default_factory=collections.Counter)
    dead_letters: collections.Counter[str] = field(default_factory=collections.Counter)


class SubscriptionError(Exception):
    """Binance answered a control message with an error."""


class _Closed:
    """Queue item: a connection's reader ended."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


class _Connection:
    def __init__(self, ws: ClientConnection, conn_id: str, opened_at: float, expires_at: float) -> None:
        self.ws = ws
        self.conn_id = conn_id
        self.opened_at = opened_at
        self.expires_at = expires_at
        self.last_frame_at = opened_at
        self.msg_no = 0
        self.last_control_at = 0.0
        self.local_close_reason: str | None = None
        self.reader: asyncio.Task[None] | None = None


class _Shard:
    def __init__(self, index: int) -> None:
        self.index = index
        self.streams: set[str] = set()
        self.conn: _Connection | None = None
        self.retiring: _Connection | None = None
        self.retire_at = 0.0
        self.handover_seen: set[str] = set()
        self.task: asyncio.Task[None] | None = None
        self.items: asyncio.Queue[tuple[_Connection, str | bytes | _Closed]] = asyncio.Queue()
        self.lock = asyncio.Lock()
        self.generation = 0


_CONNECT_ERRORS = (OSError, TimeoutError, InvalidHandshake)


class KlineStreamClient:
    """Binance kline websocket connections for a set of (symbol, interval) streams.

    ``base_url`` is ``wss://stream.binance.com:9443`` (spot) or ``wss://fstream.binance.com``
    (usdm). ``on_record`` is called on the event loop for every kline and dead letter; an
    exception from it (e.g. the producer failing) stops the client and is raised by ``run()``.
    """

    def __init__(
        self,
        base_url: str,
        streams: Iterable[tuple[str, str]],
        *,
        market: WsMarket,
        on_record: Callable[[WsRecord], None],
        config: WsConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.market = market
        self.config = config or WsConfig()
        self.stats = WsStats()
        self._on_record = on_record
        self._desired = {kline_stream(s, i) for s, i in streams}
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._shards: list[_Shard] = []
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False
        self._failure: BaseException | None = None
        self._update_lock = asyncio.Lock()  # binds to a loop on first use, not here

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the connections until ``stop()``; raises what made ``on_record`` fail."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            return
        self._place(self._desired)
        for shard in self._shards:
            self._ensure_task(shard)
        try:
            await self._stop.wait()
        finally:
            tasks = [s.task for s in self._shards if s.task is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for shard in self._shards:
                await self._close_shard(shard)
            for fut in self._pending.values():
                fut.cancel()
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        """Stop ``run()``; safe from any thread."""
        self._stop_requested = True
        loop, stop = self._loop, self._stop
        if loop is None or stop is None:
            return
        # call_soon_threadsafe also wakes the loop when called from a signal handler on its thread
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(stop.set)

    @property
    def streams(self) -> set[str]:
        return set(self._desired)

    def connections(self) -> list[tuple[str, frozenset[str]]]:
        """(connection id, streams) of every open connection."""
        return [(s.conn.conn_id, frozenset(s.streams)) for s in self._shards if s.conn is not None]

    # --- live subscription changes -----------------------------------------------------------

    async def update_streams(self, streams: Iterable[tuple[str, str]]) -> None:
        """Make the subscribed set exactly ``streams`` with SUBSCRIBE/UNSUBSCRIBE, no reconnect.

        Before ``run()`` has started it only replaces the set ``run()`` will connect with.
        """
        async with self._update_lock:
            new = {kline_stream(s, i) for s, i in streams}
            if self._loop is None:
                self._desired = new
                return
            added, removed = new - self._desired, self._desired - new
            self._desired = new
            unsubscribe: dict[int, list[str]] = {}
            for shard in self._shards:
                gone = shard.streams & removed
                if gone:
                    shard.streams -= gone
                    unsubscribe[shard.index] = sorted(gone)
            placed = self._place(added)
            logger.info("ws update streams=%d added=%d removed=%d", len(new), len(added), len(removed))
            for index, names in unsubscribe.items():
                shard = self._shards[index]
                if shard.streams:
                    await self._control(shard, "UNSUBSCRIBE", names)
                else:  # nothing left on this connection: close it, it is not a reconnect
                    if shard.task is not None:
                        shard.task.cancel()
                        await asyncio.gather(shard.task, return_exceptions=True)
                        shard.task = None
                    await self._close_shard(shard)
            for index, names in placed.items():
                shard = self._shards[index]
                if shard.task is None or shard.task.done():
                    self._ensure_task(shard)  # connects with its whole set
                else:
                    await self._control(shard, "SUBSCRIBE", names)

    def _place(self, streams: Iterable[str]) -> dict[int, list[str]]:
        """Put each stream on the first connection with room, opening shards as needed."""
        placed: dict[int, list[str]] = collections.defaultdict(list)
        cap = self.config.max_streams_per_connection
        for name in sorted(streams):
            shard = next((s for s in self._shards if len(s.streams) < cap), None)
            if shard is None:
                shard = _Shard(len(self._shards))
                self._shards.append(shard)
            shard.streams.add(name)
            placed[shard.index].append(name)
        return placed

    async def _control(self, shard: _Shard, method: str, params: list[str]) -> None:
        async with shard.lock:
            conn = shard.conn
            if conn is None:  # connecting or backing off: the next connection carries the set
                return
            loop = asyncio.get_running_loop()
            wait = conn.last_control_at + self.config.control_interval_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            rid = self._next_id
            self._next_id += 1
            fut: asyncio.Future[Any] = loop.create_future()
            self._pending[rid] = fut
            try:
                conn.last_control_at = loop.time()
                await conn.ws.send(orjson.dumps({"method": method, "params": params, "id": rid}).decode())
                async with asyncio.timeout(self.config.ack_timeout_s):
                    await fut
                self.stats.acks += 1
                logger.info(
                    "ws %s conn=%s streams=%d acknowledged id=%d", method, conn.conn_id, len(params), rid
                )
            except (SubscriptionError, TimeoutError, ConnectionClosed) as exc:
                # the server's set is unknown now: reconnect with the set we want
                logger.warning("ws %s conn=%s id=%d failed: %r; reconnecting", method, conn.conn_id, rid, exc)
                conn.local_close_reason = "resubscribe"
                await conn.ws.close()
            finally:
                self._pending.pop(rid, None)

    # --- one shard: connect, read, roll over, reconnect --------------------------------------

    def _ensure_task(self, shard: _Shard) -> None:
        if shard.task is None or shard.task.done():
            shard.task = asyncio.create_task(self._run_shard(shard), name=f"binance-ws-shard-{shard.index}")
            shard.task.add_done_callback(self._on_shard_done)

    def _on_shard_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._failure is None:
            logger.error("ws shard failed: %r", exc)
            self._failure = exc
            if self._stop is not None:
                self._stop.set()

    def _backoff(self, attempt: int) -> float:
        cap = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2.0 ** (attempt - 1))
        return cap / 2 + self._rng.uniform(0, cap / 2)

    async def _open(self, shard: _Shard) -> _Connection:
        url = f"{self.base_url}/stream?streams={'/'.join(sorted(shard.streams))}"
        cfg = self.config
        ws = await connect(
            url,
            open_timeout=cfg.open_timeout_s,
            ping_interval=cfg.ping_interval_s,
            ping_timeout=cfg.ping_timeout_s,
            close_timeout=1,
            max_queue=None,  # frames are moved to the shard's queue at once
        )
        shard.generation += 1
        now = asyncio.get_running_loop().time()
        conn = _Connection(ws, f"{shard.index}.{shard.generation}", now, now + cfg.lifetime_s)
        conn.reader = asyncio.create_task(self._read(shard, conn), name=f"binance-ws-read-{conn.conn_id}")
        self.stats.connects += 1
        logger.info(
            "ws connected conn=%s market=%s streams=%d", conn.conn_id, self.market, len(shard.streams)
        )
        return conn

    async def _read(self, shard: _Shard, conn: _Connection) -> None:
        try:
            async for frame in conn.ws:
                shard.items.put_nowait((conn, frame))
            closed = _Closed(conn.local_close_reason or "server_closed", repr(conn.ws.close_reason))
        except ConnectionClosed as exc:
            closed = _Closed(conn.local_close_reason or "connection_lost", repr(exc))
        shard.items.put_nowait((conn, closed))

    async def _run_shard(self, shard: _Shard) -> None:
        attempt = 0
        try:
            while shard.streams and not self._stop_requested:
                if shard.conn is None:
                    try:
                        async with shard.lock:
                            shard.conn = await self._open(shard)
                    except _CONNECT_ERRORS as exc:
                        attempt += 1
                        self.stats.connect_failures += 1
                        delay = self._backoff(attempt)
                        logger.warning(
                            "ws connect failed shard=%d attempt=%d retry_in_s=%.2f: %r",
                            shard.index, attempt, delay, exc,
                        )  # fmt: skip
                        await asyncio.sleep(delay)
                        continue
                reason, detail = await self._pump(shard)
                if reason == "lifetime":
                    await self._rollover(shard)
                    continue
                old, shard.conn = shard.conn, None
                assert old is not None
                self._count_reconnect(reason, old, detail)
                await self._close(old)
                # a connection that delivered data starts the back-off afresh
                attempt = 1 if old.msg_no > 0 else attempt + 1
                await asyncio.sleep(self._backoff(attempt))
        finally:
            await self._close_shard(shard)

    async def _pump(self, shard: _Shard) -> tuple[str, str]:
        """Handle frames until the current connection must be replaced; returns (reason, detail)."""
        loop = asyncio.get_running_loop()
        silence = self.config.silence_timeout_s
        while True:
            conn = shard.conn
            assert conn is not None
            now = loop.time()
            if shard.retiring is not None and now >= shard.retire_at:
                await self._retire(shard)
            if now >= conn.expires_at:
                return "lifetime", f"open for {now - conn.opened_at:.1f}s"
            if now >= conn.last_frame_at + silence:
                return "silent", f"no message for {now - conn.last_frame_at:.1f}s"
            deadline = min(conn.expires_at, conn.last_frame_at + silence)
            if shard.retiring is not None:
                deadline = min(deadline, shard.retire_at)
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                async with asyncio.timeout(deadline - now):
                    src, item = await shard.items.get()
            except TimeoutError:
                continue
            if isinstance(item, _Closed):
                if src is conn:
                    return item.reason, item.detail
                continue  # a retired or replaced connection ending
            if src is not conn and src is not shard.retiring:
                continue  # late frame from a connection already given up
            src.last_frame_at = loop.time()
            if shard.retiring is not None and isinstance(item, str):
                if item in shard.handover_seen:
                    self.stats.duplicates_dropped += 1
                    continue
                shard.handover_seen.add(item)
            self._handle_frame(src, item)

    async def _rollover(self, shard: _Shard) -> None:
        """Make-before-break: open the successor, read both for handover_s, then retire the old."""
        old = shard.conn
        assert old is not None
        loop = asyncio.get_running_loop()
        try:
            async with shard.lock:
                new = await self._open(shard)
        except _CONNECT_ERRORS as exc:
            self.stats.connect_failures += 1
            delay = self._backoff(1)
            old.expires_at = loop.time() + delay  # keep the old one meanwhile
            logger.warning("ws rollover of conn=%s failed, retry_in_s=%.2f: %r", old.conn_id, delay, exc)
            return
        self._count_reconnect("lifetime", old, f"open for {loop.time() - old.opened_at:.1f}s")
        if shard.retiring is not None:
            await self._retire(shard)
        shard.retiring, shard.conn = old, new
        shard.retire_at = loop.time() + self.config.handover_s
        shard.handover_seen.clear()

    async def _retire(self, shard: _Shard) -> None:
        old, shard.retiring = shard.retiring, None
        shard.handover_seen.clear()
        if old is not None:
            old.local_close_reason = "retired"
            await self._close(old)
            logger.info("ws retired conn=%s after handover", old.conn_id)

    def _count_reconnect(self, reason: str, conn: _Connection, detail: str) -> None:
        self.stats.reconnects[reason] += 1
        RECONNECTS.labels(reason).inc()
        logger.warning(
            "ws reconnect reason=%s conn=%s messages=%d detail=%s", reason, conn.conn_id, conn.msg_no, detail
        )

    async def _close(self, conn: _Connection) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await conn.ws.close()
        if conn.reader is not None:
            conn.reader.cancel()
            await asyncio.gather(conn.reader, return_exceptions=True)

    async def _close_shard(self, shard: _Shard) -> None:
        for conn in (shard.conn, shard.retiring):
            if conn is not None:
                conn.local_close_reason = conn.local_close_reason or "stopped"
                await self._close(conn)
        shard.conn = shard.retiring = None

    # --- frames ------------------------------------------------------------------------------

    def _handle_frame(self, conn: _Connection, frame: str | bytes) -> None:
        conn.msg_no += 1
        received_at = int(time.time() * 1000)
        if isinstance(frame, bytes):
            self._dead_letter(conn, None, frame.decode("utf-8", "replace"), "binary_frame", "binary frame")
            return
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            self._dead_letter(conn, None, frame, "bad_json", f"not JSON: {exc}")
            return
        if isinstance(msg, dict) and "id" in msg and ("result" in msg or "error" in msg):
            self._control_answer(conn, msg)
            return
        stream = msg.get("stream") if isinstance(msg, dict) else None
        data = msg.get("data") if isinstance(msg, dict) else None
        if not isinstance(stream, str) or not isinstance(data, dict):
            self._dead_letter(
                conn, stream if isinstance(stream, str) else None, frame, "bad_envelope",
                "not a combined-stream envelope {stream, data}",
            )  # fmt: skip
            return
        if data.get("e") != "kline":
            self._dead_letter(conn, stream, frame, "unknown_event", f"event type {data.get('e')!r}")
            return
        value = {"source": "ws", "market": self.market, "received_at": received_at, "event": data}
        try:
            candle = candle_from_raw(value)
        except MalformedKlineError as exc:
            self._dead_letter(conn, stream, frame, "malformed_kline", str(exc))
            return
        if kline_stream(candle.symbol, candle.interval) != stream:
            self._dead_letter(
                conn, stream, frame, "stream_mismatch",
                f"{candle.symbol} {candle.interval} kline on stream {stream}",
            )  # fmt: skip
            return
        self.stats.messages += 1
        MESSAGES.labels(candle.symbol, candle.interval).inc()
        INGESTION_LAG.labels(candle.symbol, candle.interval).set((received_at - candle.event_time) / 1000)
        self._on_record(KlineRecord(key=candle.key, value=value, candle=candle))

    def _control_answer(self, conn: _Connection, msg: dict[str, Any]) -> None:
        rid = msg.get("id")
        fut = self._pending.get(rid) if isinstance(rid, int) else None
        if "error" in msg:
            logger.warning("ws conn=%s control id=%s answered error %s", conn.conn_id, rid, msg["error"])
            if fut is not None and not fut.done():
                fut.set_exception(SubscriptionError(str(msg["error"])))
        elif fut is not None and not fut.done():
            fut.set_result(msg.get("result"))

    def _dead_letter(
        self, conn: _Connection, stream: str | None, payload: str, reason: str, detail: str
    ) -> None:
        parsed = parse_kline_stream(stream) if stream else None
        key = stream_key(*parsed) if parsed else (stream or "ws")
        value = {
            "reason": f"{reason}: {detail}",
            "source": f"ws:{stream or '?'}@{conn.conn_id}#{conn.msg_no}",
            "stage": STAGE_VALIDATE if reason in _VALIDATE_REASONS else STAGE_DECODE,
            "payload": payload[:_MAX_PAYLOAD_CHARS],
            "at": int(time.time() * 1000),
        }
        self.stats.dead_letters[reason] += 1
        DEAD_LETTERS.labels(reason).inc()
        logger.warning("ws dead letter reason=%s source=%s detail=%s", reason, value["source"], detail)
        self._on_record(DeadLetterRecord(key=key, value=value, reason=reason))


class BinanceKlineSource(RawTopicSourceMixin, Source):
    """The kline websocket as a Quix Streams source.

    Add it with its raw topic (Quix prefixes a *default* topic's name with ``source__``)::

        app = Application(broker, producer_extra_config=PRODUCER_EXTRA_CONFIG, ...)
        source = BinanceKlineSource("binance-ws-spot", base_url=..., market="spot",
                                    streams=[("BTCUSDT", "1m")])
        source.add_to(app)          # == app.add_source(source, topic=source.topic(app))

    Topics must exist (``ohlcv.infra.kafka.ensure_topics``): dead letters are produced
    straight to ``dead_letter_topic``. ``update_streams`` may be called from the process that
    built the source, before or after the Application starts it.
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        market: WsMarket,
        streams: Iterable[tuple[str, str]],
        raw_topic: str = RAW_KLINES.name,
        dead_letter_topic: str = DEAD_LETTER.name,
        config: WsConfig | None = None,
        metrics_port: int | None = None,
        shutdown_timeout: float = 10.0,
    ) -> None:
        super().__init__(name=name, shutdown_timeout=shutdown_timeout)
        pairs = [(s.upper(), i) for s, i in streams]
        for _, interval in pairs:
            interval_ms(interval)  # fail here, in the caller's process, on a bad interval
        self.base_url = base_url
        self.market: WsMarket = market
        self.streams = pairs
        self.raw_topic = raw_topic
        self.dead_letter_topic = dead_letter_topic
        self.config = config or WsConfig()
        self.metrics_port = metrics_port
        # crosses into the source process with the source (spawn pickles it at start)
        self._updates: multiprocessing.Queue[list[tuple[str, str]]] = multiprocessing.get_context(
            "spawn"
        ).Queue()
        self._client: KlineStreamClient | None = None

    def update_streams(self, streams: Iterable[tuple[str, str]]) -> None:
        """Change the subscribed set (SUBSCRIBE/UNSUBSCRIBE on the live connections)."""
        self._updates.put(sorted({(s.upper(), i) for s, i in streams}))

    def setup(self) -> None:
        if self.metrics_port is not None:
            start_http_server(self.metrics_port)

    def run(self) -> None:
        asyncio.run(self._run_async())

    def stop(self) -> None:
        super().stop()
        if self._client is not None:
            self._client.stop()

    async def _run_async(self) -> None:
        client = KlineStreamClient(
            self.base_url, self.streams, market=self.market, on_record=self._emit, config=self.config
        )
        self._client = client
        task = asyncio.create_task(client.run())
        try:
            while self.running and not task.done():
                with contextlib.suppress(queue.Empty):
                    await client.update_streams(self._updates.get_nowait())
                await asyncio.wait({task}, timeout=0.1)
        finally:
            client.stop()
            await task

    def _emit(self, record: WsRecord) -> None:
        if isinstance(record, KlineRecord):
            msg = self.serialize(key=record.key, value=record.value)
            self.produce(key=msg.key, value=msg.value, timestamp=record.value["received_at"])
        else:
            self.producer.produce(
                topic=self.dead_letter_topic, key=record.key.encode(), value=orjson.dumps(record.value)
            )
