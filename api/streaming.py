"""The ``/ws/ohlcv`` session: snapshot, resume and live events with no loss and no duplicate.

Protocol (every message is one JSON text frame):

1. Connect with ``symbol``, ``interval`` and the API key (``X-API-Key`` header or ``api_key``
   query parameter); optional ``since_seq`` (resume) and ``limit`` (snapshot candles, 1..1000,
   default 500).
2. Without ``since_seq`` the first message is a ``snapshot`` (``api.models.WsSnapshot``): recent
   closed candles, ``meta`` and ``seq``, the last event seq the snapshot includes.
3. Then every candle event of the stream with seq > that seq, in seq order, each exactly once:
   ``partial_update``, ``partial_close``, ``append``, ``repair``, ``gap_detected``,
   ``gap_repaired`` (``schemas.events``; each carries symbol, interval and seq).
4. Asked for with ``features=true``: the stream's feature rows (``features``); with
   ``news=true``: news stories tagged with the stream's symbol, ``news=all``: every story
   (``news``, a ``schemas.news.NewsArticle``, as the news topology stores it). Neither is
   sequenced: a client that missed some reads ``/api/features/history`` or
   ``/api/news/recent?since_ts``. Both come after the snapshot.

How the seam is closed: the client's subscription to this process's fan-out starts buffering
*before* the snapshot is read; buffered events with seq <= the last one sent are dropped. Right
after the snapshot (or replay) the session catches up to the newest seq the process has seen
(events that arrived before the subscription, which ClickHouse may not hold yet), and any later
hole between the last seq sent and the next live one is filled the same way: from the hub's
ring of recent events, then from ClickHouse ``ohlcv_events`` (polled for up to
``GAP_FILL_TIMEOUT_S``, since the sink stores a checkpoint after Kafka has it).

Resume rule, with ``since_seq=N`` (the last seq the client applied); ``known`` is the highest
seq in ``ohlcv_events`` or seen live by this process:

- ``N > known``: the server never saw N (another deployment, a reset store): fresh ``snapshot``
  with ``reason="since_seq_ahead"``;
- ``known - N > RESUME_MAX_EVENTS``: fresh ``snapshot``, ``reason="since_seq_too_old"``;
- some seq in (N, max stored] is no longer in ``ohlcv_events`` (partial updates expire after
  two days): fresh ``snapshot``, ``reason="since_seq_expired"``;
- otherwise exactly the events with seq > N: first from ``ohlcv_events``, then live. No
  snapshot is sent.

Close codes (the reason says what to do):

- 4401: no API key; 4403: wrong API key, or a symbol/interval this deployment does not serve
  (as the original); 4422: a malformed query parameter;
- 4408: the client read too slowly and its bounded send queue overflowed; reconnect with
  ``since_seq`` = the last seq applied (the reason names the last seq sent);
- 1013 (try again later): ClickHouse is unavailable, or a seq hole could not be filled in time;
  reconnect with ``since_seq``. 1012 is uvicorn's "server restarting" on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from prometheus_client import Counter
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.coalesce import Coalescer
from api.errors import ApiError, StoreUnavailableError
from api.fanout import NEWS_KEY, EventHub, LiveEvent, Subscription
from api.metrics import (
    WS_CLIENTS,
    WS_EVENTS_SENT,
    WS_GAP_FILLS,
    WS_OVERFLOW_CLOSED,
    WS_RESUMES,
    WS_SNAPSHOTS_SENT,
)
from api.queries import CandleQueries, Stream
from ohlcv.settings import Settings
from schemas.intervals import BINANCE_INTERVALS, interval_ms

logger = logging.getLogger(__name__)

CLOSE_NO_KEY = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_OVERFLOW = 4408
CLOSE_BAD_PARAMS = 4422
CLOSE_TRY_AGAIN = 1013

RESUME_MAX_EVENTS = 100_000
GAP_FILL_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 10.0
SNAPSHOT_LIMIT_DEFAULT = 500
SNAPSHOT_LIMIT_MAX = 1000
_PAGE = 1000


@dataclass(frozen=True)
class WsRequest:
    stream: Stream
    since_seq: int | None
    limit: int
    #: also send the stream's feature rows (``features`` events)
    features: bool = False
    #: also send news stories (``news`` events): "symbol" (those tagged with the stream's
    #: symbol), "all", or "off"
    news: str = "off"


class WsRejected(ApiError):  # noqa: N818 - a refusal, answered with a close code
    """The connection is refused with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def check_key(given: str | None, settings: Settings) -> None:
    """Raise WsRejected 4401/4403 unless ``given`` is the API key (constant-time compare)."""
    if not given:
        raise WsRejected(CLOSE_NO_KEY, "API key required: X-API-Key header or api_key query parameter")
    if not hmac.compare_digest(given.encode(), settings.api_key.get_secret_value().encode()):
        raise WsRejected(CLOSE_FORBIDDEN, "API key is not valid")


def _int(query: Mapping[str, str], name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise WsRejected(CLOSE_BAD_PARAMS, f"{name} must be an integer, got {raw[:40]!r}") from None
    if not lo <= v <= hi:
        raise WsRejected(CLOSE_BAD_PARAMS, f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def parse_request(query: Mapping[str, str], headers: Mapping[str, str], settings: Settings) -> WsRequest:
    """Validate a connection: key first (4401/4403), then parameters (4422), then served (4403)."""
    check_key(headers.get("x-api-key") or query.get("api_key"), settings)
    symbol = (query.get("symbol") or "").upper()
    interval = query.get("interval") or ""
    if not symbol or not symbol.isalnum() or len(symbol) > 30:
        raise WsRejected(CLOSE_BAD_PARAMS, "symbol is required, e.g. symbol=BTCUSDT")
    if interval not in BINANCE_INTERVALS:
        raise WsRejected(CLOSE_BAD_PARAMS, f"interval must be a Binance interval, got {interval[:10]!r}")
    since = _int(query, "since_seq", None, 0, 2**63 - 1)
    limit = _int(query, "limit", SNAPSHOT_LIMIT_DEFAULT, 1, SNAPSHOT_LIMIT_MAX)
    assert limit is not None
    flag = (query.get("features") or "false").lower()
    if flag not in ("true", "false", "1", "0"):
        raise WsRejected(CLOSE_BAD_PARAMS, f"features must be true or false, got {flag[:10]!r}")
    news = {"true": "symbol", "1": "symbol", "false": "off", "0": "off", "all": "all"}.get(
        (query.get("news") or "false").lower()
    )
    if news is None:
        raise WsRejected(CLOSE_BAD_PARAMS, f"news must be true, all or false, got {query['news'][:10]!r}")
    if not settings.serves(symbol, interval):
        raise WsRejected(CLOSE_FORBIDDEN, f"{symbol} {interval} is not served here")
    return WsRequest(
        Stream(symbol, interval, interval_ms(interval)), since, limit, flag in ("true", "1"), news
    )


async def reject(ws: WebSocket, code: int, reason: str) -> None:
    """Accept, then close with ``code`` (a close before accept would be a bare HTTP 403)."""
    await ws.accept()
    with contextlib.suppress(Exception):
        await ws.close(code, reason[:120])


class WsSession:
    """One accepted client; see the module docstring."""

    def __init__(
        self,
        ws: WebSocket,
        req: WsRequest,
        queries: CandleQueries,
        hub: EventHub,
        reads: Coalescer,
        *,
        queue_max: int,
        feature_hub: EventHub | None = None,
        news_hub: EventHub | None = None,
    ):
        self.ws = ws
        self.reads = reads
        self.req = req
        self.st = req.stream
        self.queries = queries
        self.hub = hub
        self.feature_hub = feature_hub if req.features else None
        self.news_hub = news_hub if req.news != "off" else None
        self.queue_max = queue_max
        #: the last seq handed to the client (the snapshot's, a replayed or a live one)
        self.last_seq = 0
        self._sent: dict[str, Any] = {}
        #: set once the snapshot (or the resume's replay) is sent: feature rows wait for it, so
        #: the first message is always the snapshot
        self._opened = asyncio.Event()

    # --- sending ----------------------------------------------------------------------------
    def _counter(self, etype: str) -> Any:
        c = self._sent.get(etype)
        if c is None:
            family: Counter | None = WS_EVENTS_SENT.get(etype)
            c = self._sent[etype] = family.labels(self.st.symbol, self.st.interval) if family else None
        return c

    async def _send_event(self, seq: int, etype: str, text: str) -> None:
        await self.ws.send_text(text)
        self.last_seq = seq
        c = self._counter(etype)
        if c is not None:
            c.inc()

    async def _db(self, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)

    async def _send_snapshot(self, reason: str | None) -> None:
        # clients connecting together share one snapshot read; it starts after this client
        # subscribed (api.coalesce), so the seam argument holds for each of them
        snap = await self.reads.read(
            ("snapshot", self.st.key, self.req.limit), self.queries.snapshot, self.st, self.req.limit
        )
        msg = {
            "type": "snapshot", "symbol": self.st.symbol, "interval": self.st.interval, "seq": snap.seq,
            "candles": snap.candles,
            "meta": {"earliest_open_time": snap.earliest_open_time, "latest_open_time": snap.latest_open_time,
                     "count": snap.count},
            "reason": reason,
        }  # fmt: skip
        await self.ws.send_text(orjson.dumps(msg).decode())
        self.last_seq = snap.seq
        WS_SNAPSHOTS_SENT.labels(self.st.symbol, self.st.interval).inc()

    # --- resume and seams -------------------------------------------------------------------
    async def _resume(self, since: int) -> None:
        stored = await self._db(self.queries.max_seq, self.st)
        known = max(stored, self.hub.latest_seq(self.st.key))
        reason = None
        if since > known:
            reason = "since_seq_ahead"
        elif known - since > RESUME_MAX_EVENTS:
            reason = "since_seq_too_old"
        elif since < stored and not await self._db(self.queries.events_complete, self.st, since, stored):
            reason = "since_seq_expired"
        if reason is not None:
            WS_RESUMES.labels(reason).inc()
            await self._send_snapshot(reason)
            return
        WS_RESUMES.labels("replayed").inc()
        self.last_seq = since
        while self.last_seq < stored:
            rows = await self._db(self.queries.events, self.st, self.last_seq, stored, _PAGE)
            if not rows or rows[0][0] != self.last_seq + 1:
                raise StoreUnavailableError(f"ohlcv_events lost seq {self.last_seq + 1} during a resume")
            for seq, etype, payload in rows:
                if seq != self.last_seq + 1:
                    break
                await self._send_event(seq, etype, payload)

    async def _fill(self, upto: int) -> bool:
        """Send the events between the last seq sent and ``upto`` (exclusive); False if they stay missing."""
        for ev in self.hub.recent(self.st.key, self.last_seq, upto):
            if ev.seq != self.last_seq + 1:
                break
            await self._send_event(ev.seq, ev.type, ev.text)
            WS_GAP_FILLS.labels("ring").inc()
        deadline = time.monotonic() + GAP_FILL_TIMEOUT_S
        while self.last_seq + 1 < upto:
            rows = await self._db(self.queries.events, self.st, self.last_seq, upto - 1, _PAGE)
            before = self.last_seq
            for seq, etype, payload in rows:
                if seq != self.last_seq + 1:
                    break
                await self._send_event(seq, etype, payload)
                WS_GAP_FILLS.labels("clickhouse").inc()
            if self.last_seq == before:
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.1)
        return True

    async def _deliver(self, ev: LiveEvent) -> None:
        if ev.seq <= self.last_seq:
            return  # already in the snapshot, the replay, or sent (a re-read or re-published event)
        if ev.seq > self.last_seq + 1 and not await self._fill(ev.seq):
            raise _GapNotFilled(self.last_seq, ev.seq)
        await self._send_event(ev.seq, ev.type, ev.text)

    async def _stream(self, sub: Subscription) -> None:
        await self.hub.wait_ready(READY_TIMEOUT_S)
        if self.req.since_seq is None:
            await self._send_snapshot(None)
        else:
            await self._resume(self.req.since_seq)
        self._opened.set()
        # Events this process received before the subscription are not in its queue, and
        # ClickHouse may not hold them yet: catch up to the newest seq seen now, or a quiet
        # stream would leave them unsent until its next event.
        latest = self.hub.latest_seq(self.st.key)
        if latest > self.last_seq and not await self._fill(latest + 1):
            raise _GapNotFilled(self.last_seq, latest + 1)
        while True:
            await self._deliver(await sub.queue.get())

    async def _stream_features(self, sub: Subscription) -> None:
        """Feature rows as they arrive (not sequenced: a client that missed some reads them from
        ``/api/features/history?after_open_time``)."""
        await self._opened.wait()
        while True:
            ev = await sub.queue.get()
            await self.ws.send_text(ev.text)
            c = self._counter(ev.type)
            if c is not None:
                c.inc()

    async def _stream_news(self, sub: Subscription) -> None:
        """News stories as they are stored from the session's start on (not sequenced: a
        client that missed some reads ``/api/news/recent?since_ts``), those tagged with the
        stream's symbol unless it asked for all."""
        since = int(time.time() * 1000)
        await self._opened.wait()
        every = self.req.news == "all"
        while True:
            ev = await sub.queue.get()
            # stories stored since the session began: the hub's start position may re-read a
            # few older ones (a broker reporting its end a batch short), /api/news/recent has those
            if ev.data.get("ingested_at", since) < since:
                continue
            if every or self.st.symbol in ev.data["symbols"]:
                await self.ws.send_text(ev.text)
                c = self._counter("news")
                if c is not None:
                    c.inc()

    async def _until_disconnect(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return

    async def _close(self, code: int, reason: str) -> None:
        # A client that does not read keeps the transport paused; it gets the close frame after
        # the data queued before it, or the connection is dropped after CLOSE_TIMEOUT_S.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code, reason[:120]), CLOSE_TIMEOUT_S)

    # --- the session ------------------------------------------------------------------------
    async def run(self) -> None:
        sub = self.hub.subscribe(self.st.key, self.queue_max)
        fsub = self.feature_hub.subscribe(self.st.key, self.queue_max) if self.feature_hub else None
        nsub = self.news_hub.subscribe(NEWS_KEY, self.queue_max) if self.news_hub else None
        WS_CLIENTS.inc()
        tasks: list[asyncio.Task[None]] = []
        try:
            main = asyncio.create_task(self._stream(sub))
            recv = asyncio.create_task(self._until_disconnect())
            over = asyncio.create_task(self._overflowed(sub))
            tasks = [main, recv, over]
            feed = over_f = news = over_n = None
            if fsub is not None:
                # a feature stream that fails or overflows ends the session like the candle one
                feed = asyncio.create_task(self._stream_features(fsub))
                over_f = asyncio.create_task(self._overflowed(fsub))
                tasks += [feed, over_f]
            if nsub is not None:  # so does a news stream
                news = asyncio.create_task(self._stream_news(nsub))
                over_n = asyncio.create_task(self._overflowed(nsub))
                tasks += [news, over_n]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if recv in done:
                return  # the client left
            if over in done or over_f in done or over_n in done:
                WS_OVERFLOW_CLOSED.labels(self.st.symbol, self.st.interval).inc()
                logger.info(
                    "ws client too slow key=%s queue=%d last_seq=%d",
                    self.st.key,
                    self.queue_max,
                    self.last_seq,
                )
                await self._close(CLOSE_OVERFLOW, f"too slow: send queue of {self.queue_max} overflowed; "
                                  f"resume with since_seq (last sent {self.last_seq})")  # fmt: skip
                return
            ended = feed if feed in done else news if news in done else main
            exc = None if ended is None or ended.cancelled() else ended.exception()
            if isinstance(exc, WebSocketDisconnect):
                return
            if isinstance(exc, StoreUnavailableError | _GapNotFilled):
                logger.warning("ws session closed key=%s: %s", self.st.key, exc)
                await self._close(CLOSE_TRY_AGAIN, f"{exc}; resume with since_seq")
                return
            if exc is not None:
                logger.error("ws session failed key=%s", self.st.key, exc_info=exc)
                await self._close(1011, "internal error")
        finally:
            self.hub.unsubscribe(sub)
            if fsub is not None and self.feature_hub is not None:
                self.feature_hub.unsubscribe(fsub)
            if nsub is not None and self.news_hub is not None:
                self.news_hub.unsubscribe(nsub)
            WS_CLIENTS.dec()

    @staticmethod
    async def _overflowed(sub: Subscription) -> None:
        await sub.overflowed.wait()


class _GapNotFilled(ApiError):  # noqa: N818 - answered with close code 1013
    def __init__(self, last: int, nxt: int):
        super().__init__(f"events {last + 1}..{nxt - 1} are not stored yet")
