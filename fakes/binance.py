"""A local fake Binance on 127.0.0.1 that speaks Binance's real protocols, fed with real data.

Used by the tests of ``streams/`` and by ``make demo``. It is a test double, but a faithful one:
a client that works against it uses nothing Binance would not send.

REST (one Starlette app under uvicorn, both markets on one port, like ``api.binance.com`` and
``fapi.binance.com`` share one URL layout):

- ``GET /api/v3/klines`` (spot) and ``GET /fapi/v1/klines`` (USDT-M) with ``symbol``,
  ``interval``, ``startTime``, ``endTime``, ``limit`` (default 500; max 1000 spot, 1500 futures;
  a limit out of range is error -1130). Rows are Binance's arrays with string-encoded numbers:
  ``[open_time, "o", "h", "l", "c", "v", close_time, "q", n, "V", "Q", "0"]``.
  ``startTime``/``endTime`` select on open time, both inclusive; only ``endTime`` gives the last
  ``limit`` rows up to it; neither gives the most recent ``limit`` rows.
- Request weight per market in fixed windows of ``weight_window_s`` (60 s, like Binance's
  calendar minute): spot klines cost 2, futures klines 1/2/5/10 by limit. Every response carries
  ``X-MBX-USED-WEIGHT-1M``. Over the limit (6000 spot, 2400 futures): 429 with ``Retry-After``;
  a request that arrives before that Retry-After has passed earns a 418 ban of ``ban_s``.
- Holes in a dataset (the XRP dump's real outages, or ranges hidden with :meth:`FakeBinance.hide`)
  simply return fewer rows, as Binance does. When the served timeline reaches the wall clock
  (see ``time_offset_ms``), rows that open in the future are not served and the current
  candle is served in progress (values derived as for the websocket).
- Faults on demand (:class:`RestFault`): 429 with Retry-After, 418 ban, 5xx, a slow answer
  (for client timeouts), and "no data" (``[]``).

Websocket (``websockets`` asyncio server, one port per market like ``stream.binance.com`` and
``fstream.binance.com``):

- Combined streams ``/stream?streams=xrpusdt@kline_1m/...`` (envelope
  ``{"stream": ..., "data": {...}}``) and raw streams ``/ws/<stream>``; at most ``max_streams``
  (1024) per connection; ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS`` answered with
  ``{"result": ..., "id": N}``; more than ``max_incoming_per_s`` control messages a second
  closes the connection (Binance: 5/s spot, 10/s futures); server pings every
  ``ping_interval_s`` (the library answers the client's); the server closes every connection
  after ``lifetime_s`` (Binance: 24 h).
- The market plays the datasets as live at ``Playback.speed``: for each candle,
  ``updates_per_candle`` in-progress ``x:false`` updates (open fixed, close walking from open to
  the final close, high/low growing toward the final high/low, volumes and trade count growing
  toward the final values, each rounded to the exchange's decimals) then the final ``x:true``.
  All connections see one market: a connection gets the events broadcast while it is
  subscribed, nothing is replayed.
- Faults on demand: drop every connection (optionally right after an ``x:false`` so a candle is
  cut in the middle), go silent (send nothing, keep the socket open, keep answering pings),
  inject raw (malformed) frames.

Data: Binance Vision zips (12-column CSV, header or not) and freqtrade JSON dumps
(``[[ms, o, h, l, c, v], ...]``). Real Binance always has quote volume, trade count and taker
volumes; a freqtrade dump does not. The wire format has a slot for each, so the fake fills the
slots the protocol demands with ``"0"`` (numbers) and ``0`` (trade count) and never anything
else: candles served from a freqtrade dump carry zero quote/taker volume and zero trades, a
known artifact of the data, not of the protocol. The websocket's first/last trade ids (``f``,
``L``) are synthesized from cumulative trade counts (``-1`` when a candle has no trades), and
``B`` is ``"0"`` as on Binance. Event times ``E`` are on the data timeline (plus
``time_offset_ms``): partial update ``j`` of ``K`` at ``open + step*j/(K+1)``, the final at
``open + step``.

Use::

    ds = Datasets()
    ds.add(load_vision_zip(Path("data/binance-vision/futures-um/1m/AVAXUSDT-1m-2026-02.zip")))
    with FakeBinance(ds, playback=Playback(speed=600)) as fake:
        urls = fake.urls            # spot_rest, usdm_rest, spot_ws, usdm_ws
        fake.push_rest_fault(RestFault.too_many_requests(retry_after_s=1))
        fake.drop_connections(mid_candle=True)

Everything runs on one asyncio loop in a background thread. The knobs are thread-safe and
block until applied, so call them from another thread (async tests: ``asyncio.to_thread``).
``python -m fakes.binance --live --speed 1`` serves the repository's data shifted to today
(``live_offsets``, ``Playback(live=True)``), e.g. for ``make demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import functools
import heapq
import io
import json
import logging
import math
import socket
import threading
import time
import zipfile
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from schemas.intervals import BINANCE_INTERVALS, interval_ms
from streams.binance_rest import klines_weight  # Binance's weight rules, one copy

logger = logging.getLogger(__name__)

FakeMarket = Literal["spot", "usdm"]
MARKETS: tuple[FakeMarket, ...] = ("spot", "usdm")
KLINES_PATH: dict[FakeMarket, str] = {"spot": "/api/v3/klines", "usdm": "/fapi/v1/klines"}
MAX_LIMIT: dict[FakeMarket, int] = {"spot": 1000, "usdm": 1500}
DEFAULT_LIMIT = 500
WEIGHT_LIMIT: dict[FakeMarket, int] = {"spot": 6000, "usdm": 2400}
MAX_INCOMING_PER_S: dict[FakeMarket, int] = {"spot": 5, "usdm": 10}
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
MAX_STREAMS_PER_CONNECTION = 1024
DAY_S = 86_400.0


def kline_stream(symbol: str, interval: str) -> str:
    """Binance stream name of a kline stream: ``xrpusdt@kline_1m``."""
    return f"{symbol.lower()}@kline_{interval}"


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kline:
    """One kline as Binance serves it: times in ms, numbers as the exchange's decimal strings."""

    open_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    close_time: int
    quote_volume: str
    trades: int
    taker_buy_base: str
    taker_buy_quote: str

    def rest_row(self, offset_ms: int = 0) -> list[Any]:
        """The REST array, ``"0"`` in the unused last slot as Binance sends it."""
        return [
            self.open_time + offset_ms, self.open, self.high, self.low, self.close, self.volume,
            self.close_time + offset_ms, self.quote_volume, self.trades, self.taker_buy_base,
            self.taker_buy_quote, "0",
        ]  # fmt: skip


@dataclass(frozen=True)
class KlineSeries:
    """The klines of one (market, symbol, interval), ascending by open time, no duplicates."""

    market: FakeMarket
    symbol: str
    interval: str
    klines: tuple[Kline, ...]
    #: open times, for bisecting
    open_times: tuple[int, ...] = field(init=False, repr=False)
    #: id of the first trade of each kline (cumulative trade counts), for ``f``/``L``
    first_trade_ids: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "open_times", tuple(k.open_time for k in self.klines))
        ids, nxt = [], 1
        for k in self.klines:
            ids.append(nxt)
            nxt += k.trades
        object.__setattr__(self, "first_trade_ids", tuple(ids))

    @property
    def stream(self) -> str:
        return kline_stream(self.symbol, self.interval)

    def __len__(self) -> int:
        return len(self.klines)


_E8 = Decimal("1e-8")


def _fmt8(x: str | int) -> str:
    # freqtrade writes Binance's 8-decimal strings as JSON numbers with trailing zeros dropped;
    # read as text (parse_float=str) they are the exchange's digits, padded back to 8 decimals
    r = str(x)
    whole, _, frac = r.partition(".")
    if len(frac) > 8 or not whole.lstrip("-").isdigit() or (frac and not frac.isdigit()):
        return format(Decimal(r).quantize(_E8), "f")  # exponent notation, or more than 8 decimals
    return f"{whole}.{frac.ljust(8, '0')}"


def load_freqtrade_json(
    path: Path, *, symbol: str | None = None, interval: str | None = None, market: FakeMarket = "spot"
) -> KlineSeries:
    """A freqtrade/ccxt dump ``[[ms, o, h, l, c, v], ...]`` named like ``XRP_USDT-1m.json``.

    The dump has no quote volume, trade count or taker volumes: their slots are ``"0"``/``0``
    (see the module docstring).
    """
    stem = path.name.removesuffix(".json")
    pair, _, file_interval = stem.partition("-")
    symbol = symbol or pair.replace("_", "").upper()
    interval = interval or file_interval
    step = interval_ms(interval)
    rows = json.loads(path.read_text(), parse_float=str)
    klines = [
        Kline(int(r[0]), _fmt8(r[1]), _fmt8(r[2]), _fmt8(r[3]), _fmt8(r[4]), _fmt8(r[5]),
              int(r[0]) + step - 1, "0", 0, "0", "0")
        for r in rows
    ]  # fmt: skip
    return _series(market, symbol, interval, klines)


def load_vision_zip(path: Path, *, market: FakeMarket = "usdm") -> KlineSeries:
    """A Binance Vision monthly/daily klines zip named like ``AVAXUSDT-1m-2026-02.zip``."""
    symbol, interval = path.name.split("-")[:2]
    klines: list[Kline] = []
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            with zf.open(member) as raw:
                for row in csv.reader(io.TextIOWrapper(raw, encoding="utf-8")):
                    if not row or row[0] == "open_time":  # newer files carry a header
                        continue
                    klines.append(
                        Kline(int(row[0]), row[1], row[2], row[3], row[4], row[5], int(row[6]),
                              row[7], int(row[8]), row[9], row[10])
                    )  # fmt: skip
    return _series(market, symbol, interval, klines)


def _series(market: FakeMarket, symbol: str, interval: str, klines: Iterable[Kline]) -> KlineSeries:
    interval_ms(interval)  # reject what Binance would not serve
    by_open = {k.open_time: k for k in klines}
    return KlineSeries(market, symbol.upper(), interval, tuple(by_open[t] for t in sorted(by_open)))


class Datasets:
    """The series the fake serves, by (market, symbol, interval); adding merges (e.g. months)."""

    def __init__(self, series: Iterable[KlineSeries] = ()) -> None:
        self._series: dict[tuple[str, str, str], KlineSeries] = {}
        for s in series:
            self.add(s)

    def add(self, series: KlineSeries) -> Datasets:
        key = (series.market, series.symbol, series.interval)
        old = self._series.get(key)
        if old is not None:
            series = _series(series.market, series.symbol, series.interval, (*old.klines, *series.klines))
        self._series[key] = series
        return self

    def get(self, market: str, symbol: str, interval: str) -> KlineSeries | None:
        return self._series.get((market, symbol, interval))

    def symbols(self, market: str) -> set[str]:
        return {s for (m, s, _) in self._series if m == market}

    def in_market(self, market: str) -> list[KlineSeries]:
        return [s for (m, _, _), s in sorted(self._series.items()) if m == market]

    def __iter__(self) -> Iterator[KlineSeries]:
        return iter(self._series.values())

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> Datasets:
        """Everything the repository ships under ``data/``: freqtrade spot dumps, Vision USDT-M zips."""
        ds = cls()
        for p in sorted((data_dir / "freqtrade" / "binance").glob("*.json")):
            ds.add(load_freqtrade_json(p))
        for p in sorted((data_dir / "binance-vision" / "futures-um").glob("*/*.zip")):
            ds.add(load_vision_zip(p))
        return ds


# --------------------------------------------------------------------------------------------
# the kline event a candle produces while it is open, and when it closes
# --------------------------------------------------------------------------------------------


def _places(s: str) -> int:
    exp = Decimal(s).as_tuple().exponent
    return -exp if isinstance(exp, int) and exp < 0 else 0


def _q(x: Decimal, places: int) -> str:
    return format(x.quantize(Decimal(1).scaleb(-places)), "f")


def _grow(final: str, p: Decimal) -> str:
    return _q(Decimal(final) * p, _places(final))


def partial_kline(k: Kline, p: Decimal) -> Kline:
    """The candle ``k`` a fraction ``p`` (0 < p < 1) into its interval, derived from its final values.

    Open is fixed; close walks from open to the final close; high and low are the running
    extremes (never beyond the final ones); volumes and trades grow linearly. Prices keep the
    exchange's decimals, so ``low <= open, close <= high`` holds for every update.
    """
    o, h, lo, c = Decimal(k.open), Decimal(k.high), Decimal(k.low), Decimal(k.close)
    close = Decimal(_q(o + (c - o) * p, _places(k.close)))
    high = max(o, close, Decimal(_q(o + (h - o) * p, _places(k.high))))
    low = min(o, close, Decimal(_q(o + (lo - o) * p, _places(k.low))))
    return Kline(
        open_time=k.open_time,
        open=k.open,
        high=_q(high, _places(k.high)),
        low=_q(low, _places(k.low)),
        close=_q(close, _places(k.close)),
        volume=_grow(k.volume, p),
        close_time=k.close_time,
        quote_volume=_grow(k.quote_volume, p),
        trades=int(k.trades * p),
        taker_buy_base=_grow(k.taker_buy_base, p),
        taker_buy_quote=_grow(k.taker_buy_quote, p),
    )


def kline_event(
    symbol: str,
    interval: str,
    k: Kline,
    *,
    closed: bool,
    event_time: int,
    first_trade_id: int,
    offset_ms: int = 0,
) -> dict[str, Any]:
    """A websocket kline event in Binance's field order, numbers as strings."""
    first, last = (first_trade_id, first_trade_id + k.trades - 1) if k.trades > 0 else (-1, -1)
    return {
        "e": "kline",
        "E": event_time + offset_ms,
        "s": symbol,
        "k": {
            "t": k.open_time + offset_ms,
            "T": k.close_time + offset_ms,
            "s": symbol,
            "i": interval,
            "f": first,
            "L": last,
            "o": k.open,
            "c": k.close,
            "h": k.high,
            "l": k.low,
            "v": k.volume,
            "n": k.trades,
            "x": closed,
            "q": k.quote_volume,
            "V": k.taker_buy_base,
            "Q": k.taker_buy_quote,
            "B": "0",
        },
    }


def candle_events(series: KlineSeries, index: int, updates: int, offset_ms: int = 0) -> list[dict[str, Any]]:
    """The events candle ``index`` of ``series`` produces live: ``updates`` x ``x:false``, one ``x:true``."""
    k = series.klines[index]
    step = interval_ms(series.interval)
    first_id = series.first_trade_ids[index]
    out = []
    for j in range(1, updates + 1):
        p = Decimal(j) / Decimal(updates + 1)
        out.append(
            kline_event(
                series.symbol, series.interval, partial_kline(k, p), closed=False,
                event_time=k.open_time + step * j // (updates + 1), first_trade_id=first_id,
                offset_ms=offset_ms,
            )
        )  # fmt: skip
    out.append(
        kline_event(
            series.symbol, series.interval, k, closed=True, event_time=k.open_time + step,
            first_trade_id=first_id, offset_ms=offset_ms,
        )
    )  # fmt: skip
    return out


def dumps(obj: Any) -> str:
    """Compact JSON, as Binance sends it."""
    return json.dumps(obj, separators=(",", ":"))


# --------------------------------------------------------------------------------------------
# knobs and records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Playback:
    """How the websocket market plays the datasets."""

    #: data milliseconds per wall milliseconds: 60 plays a 1m candle per second
    speed: float = 60.0
    #: in-progress ``x:false`` updates before each final ``x:true``
    updates_per_candle: int = 3
    #: data time the market starts at (a candle open, or inside one: the rest of it is played);
    #: default each market's earliest open time
    start_ms: int | None = None
    #: candles per stream to play; None plays to the end of the data
    max_candles: int | None = None
    #: start playing on ``start()``; False waits for :meth:`FakeBinance.play`
    autostart: bool = True
    #: start each market at the wall clock (``now - offset``) instead of ``start_ms``; with the
    #: offsets of :func:`live_offsets` and speed 1 the data plays as today's live market
    live: bool = False


@dataclass(frozen=True)
class RestFault:
    """One scripted answer to the next matching klines request (FIFO)."""

    status: int = 200
    retry_after_s: int | None = None
    delay_s: float = 0.0
    no_data: bool = False
    #: only for this market; None: the next request of either market
    market: FakeMarket | None = None

    @classmethod
    def too_many_requests(cls, retry_after_s: int = 1, market: FakeMarket | None = None) -> RestFault:
        return cls(status=429, retry_after_s=retry_after_s, market=market)

    @classmethod
    def banned(cls, retry_after_s: int = 1, market: FakeMarket | None = None) -> RestFault:
        return cls(status=418, retry_after_s=retry_after_s, market=market)

    @classmethod
    def server_error(cls, status: int = 503, market: FakeMarket | None = None) -> RestFault:
        return cls(status=status, market=market)

    @classmethod
    def slow(cls, delay_s: float, market: FakeMarket | None = None) -> RestFault:
        """Answer normally, but only after ``delay_s`` (a client timeout)."""
        return cls(delay_s=delay_s, market=market)

    @classmethod
    def empty(cls, market: FakeMarket | None = None) -> RestFault:
        """Answer ``[]``: no data for this range."""
        return cls(no_data=True, market=market)


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One klines request as the fake saw and answered it."""

    market: FakeMarket
    params: dict[str, str]
    status: int
    weight: int
    used_weight: int
    rows: int
    #: time.monotonic() when it arrived
    at: float


@dataclass(frozen=True, slots=True)
class SentFrame:
    conn_id: int
    stream: str | None
    text: str
    #: time.monotonic() when sent
    at: float


@dataclass(frozen=True, slots=True)
class ControlRequest:
    conn_id: int
    message: str
    reply: str | None


@dataclass(frozen=True, slots=True)
class Drop:
    """A connection cut by :meth:`FakeBinance.drop_connections`; mid-candle ones name the candle."""

    conn_ids: tuple[int, ...]
    stream: str | None
    open_time: int | None
    at: float


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    conn_id: int
    market: FakeMarket
    streams: frozenset[str]
    combined: bool
    silent: bool


@dataclass(frozen=True)
class FakeBinanceUrls:
    spot_rest: str
    usdm_rest: str
    spot_ws: str
    usdm_ws: str

    def rest(self, market: str) -> str:
        return self.spot_rest if market == "spot" else self.usdm_rest

    def ws(self, market: str) -> str:
        return self.spot_ws if market == "spot" else self.usdm_ws


class _Conn:
    def __init__(
        self, conn_id: int, ws: ServerConnection, market: FakeMarket, streams: set[str], combined: bool
    ):
        self.conn_id = conn_id
        self.ws = ws
        self.market = market
        self.streams = streams
        self.combined = combined
        self.silent = False
        self.incoming: deque[float] = deque()


@dataclass
class _RestState:
    used: dict[str, tuple[int, int]] = field(default_factory=dict)  # market -> (window, used)
    retry_until: dict[str, float] = field(default_factory=dict)  # after a 429 (monotonic)
    banned_until: dict[str, float] = field(default_factory=dict)  # after a 418 (monotonic)


# --------------------------------------------------------------------------------------------
# the fake
# --------------------------------------------------------------------------------------------


class FakeBinance:
    """Fake Binance REST + websocket servers on free 127.0.0.1 ports, in a background thread."""

    def __init__(
        self,
        datasets: Datasets,
        *,
        playback: Playback = Playback(),
        time_offset_ms: int | Mapping[str, int] = 0,
        lifetime_s: float = DAY_S,
        ping_interval_s: float | None = 20.0,
        ping_timeout_s: float | None = 60.0,
        max_streams: int = MAX_STREAMS_PER_CONNECTION,
        max_incoming_per_s: dict[FakeMarket, int] | None = None,
        weight_limit: dict[FakeMarket, int] | None = None,
        weight_window_s: float = 60.0,
        ban_s: int = 120,
        log_limit: int = 200_000,
    ) -> None:
        self.datasets = datasets
        self.playback = playback
        #: added to every time the fake serves, per market (data timeline -> served timeline)
        self.offsets: dict[str, int] = (
            dict.fromkeys(MARKETS, time_offset_ms)
            if isinstance(time_offset_ms, int)
            else dict(time_offset_ms)
        )
        self.lifetime_s = lifetime_s
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.max_streams = max_streams
        self.max_incoming_per_s = max_incoming_per_s or dict(MAX_INCOMING_PER_S)
        self.weight_limit = weight_limit or dict(WEIGHT_LIMIT)
        self.weight_window_s = weight_window_s
        self.ban_s = ban_s

        self._lock = threading.Lock()
        self._faults: list[RestFault] = []
        self._hidden: list[tuple[str, str, str, int, int]] = []
        self._rest = _RestState()
        self._rest_log: deque[RestRequest] = deque(maxlen=log_limit)
        self._sent: deque[SentFrame] = deque(maxlen=log_limit)
        self._control: deque[ControlRequest] = deque(maxlen=log_limit)
        self._drops: list[Drop] = []

        self._conns: dict[int, _Conn] = {}
        self._next_conn_id = 1
        self._drop_mid_candle: set[FakeMarket] = set()
        self._players: list[asyncio.Task[None]] = []

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._urls: FakeBinanceUrls | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> FakeBinanceUrls:
        if self._thread is not None:
            raise RuntimeError("fake Binance already started")
        self._thread = threading.Thread(target=self._thread_main, name="fake-binance", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"fake Binance did not start within {timeout_s}s")
        if self._error is not None:
            raise RuntimeError(f"fake Binance failed to start: {self._error}") from self._error
        assert self._urls is not None
        logger.info("fake binance started urls=%s", self._urls)
        return self._urls

    def stop(self, timeout_s: float = 10.0) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout_s)
        self._thread = None
        logger.info("fake binance stopped")

    def __enter__(self) -> FakeBinance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def urls(self) -> FakeBinanceUrls:
        if self._urls is None:
            raise RuntimeError("fake Binance is not started")
        return self._urls

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        rest_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        rest_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rest_sock.bind(("127.0.0.1", 0))
        rest_port = rest_sock.getsockname()[1]
        config = uvicorn.Config(
            self._rest_app(),
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        rest_task = asyncio.create_task(server.serve(sockets=[rest_sock]))
        ws_servers: dict[FakeMarket, Server] = {}
        try:
            for market in MARKETS:
                ws_servers[market] = await serve(
                    functools.partial(self._ws_handler, market=market),
                    "127.0.0.1",
                    0,
                    process_request=self._ws_process_request,
                    ping_interval=self.ping_interval_s,
                    ping_timeout=self.ping_timeout_s,
                    close_timeout=1,
                )
            while not server.started:
                if rest_task.done():
                    rest_task.result()
                await asyncio.sleep(0.01)
            ws_port = {m: s.sockets[0].getsockname()[1] for m, s in ws_servers.items()}
            rest = f"http://127.0.0.1:{rest_port}"
            self._urls = FakeBinanceUrls(
                spot_rest=rest, usdm_rest=rest,
                spot_ws=f"ws://127.0.0.1:{ws_port['spot']}", usdm_ws=f"ws://127.0.0.1:{ws_port['usdm']}",
            )  # fmt: skip
            if self.playback.autostart:
                self._start_players()
            self._ready.set()
            await self._stopping.wait()
        finally:
            for t in self._players:
                t.cancel()
            for s in ws_servers.values():
                s.close()
            for s in ws_servers.values():
                await s.wait_closed()
            server.should_exit = True
            await rest_task

    def _call(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the fake's loop and wait for it."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("fake Binance is not started")

        async def run() -> None:
            res = fn(*args)
            if asyncio.iscoroutine(res):
                await res

        asyncio.run_coroutine_threadsafe(run(), loop).result(10)

    # --- REST knobs and records -------------------------------------------------------------

    def push_rest_fault(self, *faults: RestFault) -> None:
        """Answer the next matching klines requests with these faults, in order."""
        with self._lock:
            self._faults.extend(faults)

    def hide(self, market: FakeMarket, symbol: str, interval: str, start_ms: int, end_ms: int) -> None:
        """Serve no candle opening in [start_ms, end_ms] (served timeline): "no data for this range"."""
        with self._lock:
            self._hidden.append((market, symbol, interval, start_ms, end_ms))

    @property
    def rest_requests(self) -> list[RestRequest]:
        with self._lock:
            return list(self._rest_log)

    def used_weight(self, market: FakeMarket) -> int:
        with self._lock:
            window, used = self._rest.used.get(market, (-1, 0))
            return used if window == self._window() else 0

    # --- websocket knobs and records --------------------------------------------------------

    def play(self) -> None:
        """Start the market (when ``Playback.autostart`` is False)."""
        self._call(self._start_players)

    def drop_connections(self, *, mid_candle: bool = False, market: FakeMarket | None = None) -> None:
        """Cut every connection without a close frame; ``mid_candle``: right after the next ``x:false``."""
        markets = [market] if market else list(MARKETS)
        if mid_candle:
            self._call(self._drop_mid_candle.update, markets)
        else:
            self._call(self._drop, markets, None, None)

    def go_silent(self, market: FakeMarket | None = None) -> None:
        """Current connections get nothing more (the socket stays open and answers pings)."""

        def silence() -> None:
            for c in self._conns.values():
                if market is None or c.market == market:
                    c.silent = True

        self._call(silence)

    def send_frames(self, frames: Sequence[str | bytes], market: FakeMarket | None = None) -> None:
        """Send raw frames (e.g. malformed ones) to every current connection."""

        async def send() -> None:
            for c in list(self._conns.values()):
                if market is None or c.market == market:
                    for f in frames:
                        await self._send(c, None, f)

        self._call(send)

    def connections(self) -> list[ConnectionInfo]:
        with self._lock:
            return [
                ConnectionInfo(c.conn_id, c.market, frozenset(c.streams), c.combined, c.silent)
                for c in self._conns.values()
            ]

    def wait_for(self, predicate: Any, timeout_s: float = 10.0, what: str = "condition") -> None:
        """Poll ``predicate(self)`` until true; TimeoutError naming ``what`` otherwise."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake Binance: {what} not reached within {timeout_s}s")
            time.sleep(0.01)

    @property
    def sent_frames(self) -> list[SentFrame]:
        with self._lock:
            return list(self._sent)

    @property
    def control_requests(self) -> list[ControlRequest]:
        with self._lock:
            return list(self._control)

    @property
    def drops(self) -> list[Drop]:
        with self._lock:
            return list(self._drops)

    # --- REST -------------------------------------------------------------------------------

    def _window(self) -> int:
        return int(time.time() // self.weight_window_s)

    def _rest_app(self) -> Starlette:
        async def spot(request: Request) -> Response:
            return await self._klines(request, "spot")

        async def usdm(request: Request) -> Response:
            return await self._klines(request, "usdm")

        async def ping(request: Request) -> Response:
            return JSONResponse({})

        async def server_time(request: Request) -> Response:
            return JSONResponse({"serverTime": int(time.time() * 1000)})

        return Starlette(
            routes=[
                Route(KLINES_PATH["spot"], spot),
                Route(KLINES_PATH["usdm"], usdm),
                Route("/api/v3/ping", ping),
                Route("/fapi/v1/ping", ping),
                Route("/api/v3/time", server_time),
                Route("/fapi/v1/time", server_time),
            ]
        )

    def _next_fault(self, market: FakeMarket) -> RestFault | None:
        for i, f in enumerate(self._faults):
            if f.market is None or f.market == market:
                return self._faults.pop(i)
        return None

    async def _klines(self, request: Request, market: FakeMarket) -> Response:
        params = dict(request.query_params)
        arrived = time.monotonic()
        try:
            limit = int(params.get("limit", DEFAULT_LIMIT))
        except ValueError:
            limit = DEFAULT_LIMIT
        weight = klines_weight(market, limit)
        with self._lock:
            fault = self._next_fault(market)
            status, body, retry_after, used = self._admit(market, weight, arrived, fault)
        if status == 200 and fault is not None and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        rows: list[list[Any]] = []
        if status == 200:
            if fault is not None and fault.no_data:
                body = rows
            else:
                status, body = self._select(market, params)
                if status == 200:
                    rows = body
        headers = {WEIGHT_HEADER: str(used)}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        with self._lock:
            self._rest_log.append(RestRequest(market, params, status, weight, used, len(rows), arrived))
        return Response(dumps(body), status_code=status, headers=headers, media_type="application/json")

    def _admit(
        self, market: FakeMarket, weight: int, now: float, fault: RestFault | None
    ) -> tuple[int, Any, int | None, int]:
        """Account weight and decide bans, limits and injected faults (under the lock)."""
        st = self._rest
        window = self._window()
        w, used = st.used.get(market, (window, 0))
        used = (used if w == window else 0) + weight
        st.used[market] = (window, used)
        limit = self.weight_limit[market]

        def banned(until: float) -> tuple[int, Any, int | None, int]:
            ms = int((time.time() + until - now) * 1000)
            msg = f"Way too much request weight used; IP banned until {ms}. Please use WebSocket Streams for live updates to avoid bans."  # noqa: E501
            # (now + s) - now can come out a float ulp above s (now is monotonic seconds): round first
            return 418, {"code": -1003, "msg": msg}, max(1, math.ceil(round(until - now, 6))), used

        too_many = {
            "code": -1003,
            "msg": f"Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
            "Please use WebSocket Streams for live updates to avoid polling the API.",
        }
        if st.banned_until.get(market, 0.0) > now:
            return banned(st.banned_until[market])
        if st.retry_until.get(market, 0.0) > now:  # did not honour Retry-After: ban
            st.banned_until[market] = now + self.ban_s
            return banned(st.banned_until[market])
        if fault is not None and fault.status == 429:
            st.retry_until[market] = now + (fault.retry_after_s or 1)
            return 429, too_many, fault.retry_after_s or 1, used
        if fault is not None and fault.status == 418:
            st.banned_until[market] = now + (fault.retry_after_s or self.ban_s)
            return banned(st.banned_until[market])
        if fault is not None and fault.status >= 500:
            msg = "Internal error; unable to process your request. Please try again."
            return fault.status, {"code": -1001, "msg": msg}, None, used
        if used > limit:
            retry = max(1, math.ceil((window + 1) * self.weight_window_s - time.time()))
            st.retry_until[market] = now + retry
            return 429, too_many, retry, used
        return 200, None, None, used

    def _select(self, market: FakeMarket, params: dict[str, str]) -> tuple[int, Any]:
        def bad(code: int, msg: str) -> tuple[int, Any]:
            return 400, {"code": code, "msg": msg}

        symbol = params.get("symbol", "")
        interval = params.get("interval", "")
        if not symbol:
            return bad(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if not interval:
            return bad(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        if symbol not in self.datasets.symbols(market):
            return bad(-1121, "Invalid symbol.")
        if interval not in BINANCE_INTERVALS:
            return bad(-1120, "Invalid interval.")
        try:
            limit = int(params.get("limit", DEFAULT_LIMIT))
            start = int(params["startTime"]) if "startTime" in params else None
            end = int(params["endTime"]) if "endTime" in params else None
        except ValueError:
            return bad(-1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= MAX_LIMIT[market]:
            return bad(-1130, "Data sent for parameter 'limit' is not valid.")
        if start is not None and end is not None and start > end:
            return bad(-1023, "Start time is greater than end time.")
        series = self.datasets.get(market, symbol, interval)
        if series is None:  # a symbol we have, at an interval we did not load
            return 200, []
        return 200, self._rows(series, start, end, limit)

    def _rows(self, series: KlineSeries, start: int | None, end: int | None, limit: int) -> list[list[Any]]:
        off = self.offsets.get(series.market, 0)
        now = int(time.time() * 1000)
        step = interval_ms(series.interval)
        with self._lock:
            hidden = [
                (a, b) for (m, s, i, a, b) in self._hidden
                if (m, s, i) == (series.market, series.symbol, series.interval)
            ]  # fmt: skip
        lo = bisect_left(series.open_times, start - off) if start is not None else 0
        hi = bisect_right(series.open_times, end - off) if end is not None else len(series)
        hi = min(hi, bisect_right(series.open_times, now - off))  # nothing opens in the future

        def visible(i: int) -> bool:
            t = series.open_times[i] + off
            return not any(a <= t <= b for a, b in hidden)

        idx: list[int] = []
        if start is None:
            for i in range(hi - 1, lo - 1, -1):  # the last `limit` rows
                if visible(i):
                    idx.append(i)
                    if len(idx) == limit:
                        break
            idx.reverse()
        else:
            for i in range(lo, hi):
                if visible(i):
                    idx.append(i)
                    if len(idx) == limit:
                        break
        rows = []
        for i in idx:
            k = series.klines[i]
            if k.close_time + off >= now:  # the current candle: in progress
                p = Decimal(now - off - k.open_time) / Decimal(step)
                k = partial_kline(k, min(max(p, Decimal("0.001")), Decimal("0.999")))
            rows.append(k.rest_row(off))
        return rows

    # --- websocket --------------------------------------------------------------------------

    def _ws_process_request(self, connection: ServerConnection, request: WsRequest) -> WsResponse | None:
        parsed = urlsplit(request.path)
        if parsed.path == "/stream":
            streams = [s for s in parse_qs(parsed.query).get("streams", [""])[0].split("/") if s]
        elif parsed.path.startswith("/ws"):
            streams = [s for s in parsed.path.removeprefix("/ws").split("/") if s]
        else:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if len(streams) > self.max_streams:
            return connection.respond(
                HTTPStatus.BAD_REQUEST, f"too many streams: {len(streams)} > {self.max_streams}\n"
            )
        return None

    async def _ws_handler(self, ws: ServerConnection, market: FakeMarket) -> None:
        parsed = urlsplit(ws.request.path if ws.request else "/")
        if parsed.path == "/stream":
            combined = True
            streams = [s for s in parse_qs(parsed.query).get("streams", [""])[0].split("/") if s]
        else:
            combined = False
            streams = [s for s in parsed.path.removeprefix("/ws").split("/") if s]
        with self._lock:
            conn = _Conn(self._next_conn_id, ws, market, set(streams), combined)
            self._next_conn_id += 1
            self._conns[conn.conn_id] = conn
        logger.info("fake ws connected conn=%s market=%s streams=%d", conn.conn_id, market, len(streams))
        assert self._loop is not None
        cut = self._loop.call_later(
            self.lifetime_s, lambda: asyncio.ensure_future(ws.close(1001, "connection lifetime reached"))
        )
        try:
            async for message in ws:
                await self._on_client_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            cut.cancel()
            with self._lock:
                self._conns.pop(conn.conn_id, None)
            logger.info("fake ws disconnected conn=%s", conn.conn_id)

    async def _on_client_message(self, conn: _Conn, message: str | bytes) -> None:
        now = time.monotonic()
        conn.incoming.append(now)
        while conn.incoming and conn.incoming[0] < now - 1.0:
            conn.incoming.popleft()
        if len(conn.incoming) > self.max_incoming_per_s[conn.market]:
            logger.info("fake ws conn=%s over %s msgs/s, closing", conn.conn_id, self.max_incoming_per_s)
            await conn.ws.close(1008, "too many requests")
            return
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        reply = self._control_reply(conn, text)
        with self._lock:
            self._control.append(ControlRequest(conn.conn_id, text, reply))
        if reply is not None and not conn.silent:
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.send(reply)

    def _control_reply(self, conn: _Conn, text: str) -> str | None:
        def error(code: int, msg: str, rid: object = None) -> str:
            return dumps({"error": {"code": code, "msg": msg}, "id": rid})

        try:
            req = json.loads(text)
        except ValueError as exc:
            return error(3, f"Invalid JSON: {exc}")
        if not isinstance(req, dict):
            return error(2, "Invalid request: expected an object")
        rid, method, params = req.get("id"), req.get("method"), req.get("params", [])
        if not isinstance(rid, int | str) or isinstance(rid, bool):
            return error(2, "Invalid request: request ID must be an unsigned integer")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return error(2, "Invalid request: params must be stream names", rid)
            with self._lock:
                if method == "SUBSCRIBE":
                    if len(conn.streams | set(params)) > self.max_streams:
                        return error(2, f"Invalid request: too many streams (max {self.max_streams})", rid)
                    conn.streams |= set(params)
                else:
                    conn.streams -= set(params)
            return dumps({"result": None, "id": rid})
        if method == "LIST_SUBSCRIPTIONS":
            with self._lock:
                return dumps({"result": sorted(conn.streams), "id": rid})
        return error(2, f"Invalid request: unknown method {method!r}", rid)

    async def _send(self, conn: _Conn, stream: str | None, frame: str | bytes) -> None:
        if conn.silent:
            return
        try:
            await conn.ws.send(frame)
        except ConnectionClosed:
            return
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        with self._lock:
            self._sent.append(SentFrame(conn.conn_id, stream, text, time.monotonic()))

    def _drop(self, markets: Iterable[str], stream: str | None, open_time: int | None) -> None:
        ids = []
        for c in list(self._conns.values()):
            if c.market in markets:
                ids.append(c.conn_id)
                c.ws.transport.abort()  # no close frame: the client sees 1006
        with self._lock:
            self._drops.append(Drop(tuple(ids), stream, open_time, time.monotonic()))
        logger.info("fake ws dropped conns=%s stream=%s open_time=%s", ids, stream, open_time)

    # --- the market -------------------------------------------------------------------------

    def _start_players(self) -> None:
        if self._players:
            return
        for market in MARKETS:
            series = self.datasets.in_market(market)
            if series:
                self._players.append(asyncio.create_task(self._play(market, series)))

    def _timeline(self, series: KlineSeries, start_ms: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
        # from the candle open at start_ms (if any), skipping its updates before start_ms
        first = max(0, bisect_right(series.open_times, start_ms) - 1)
        if series.open_times and series.klines[first].close_time < start_ms:
            first += 1
        stop = len(series) if self.playback.max_candles is None else first + self.playback.max_candles
        off = self.offsets.get(series.market, 0)
        for i in range(first, min(stop, len(series))):
            for ev in candle_events(series, i, self.playback.updates_per_candle, off):
                if ev["E"] >= start_ms + off:
                    yield ev["E"], series.stream, ev

    async def _play(self, market: FakeMarket, series: list[KlineSeries]) -> None:
        start = self.playback.start_ms
        if self.playback.live:  # the wall clock, on this market's data timeline
            start = int(time.time() * 1000) - self.offsets.get(market, 0)
        elif start is None:
            start = min(s.open_times[0] for s in series if len(s))
        merged = heapq.merge(*(self._timeline(s, start) for s in series), key=lambda e: e[0])
        loop = asyncio.get_running_loop()
        t0, d0 = loop.time(), start + self.offsets.get(market, 0)
        logger.info("fake ws market=%s playing from %s at speed %s", market, start, self.playback.speed)
        for event_time, stream, event in merged:
            delay = t0 + (event_time - d0) / self.playback.speed / 1000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            subscribers = [c for c in self._conns.values() if c.market == market and stream in c.streams]
            if not subscribers:
                continue
            data = dumps(event)
            envelope = f'{{"stream":"{stream}","data":{data}}}'
            for c in subscribers:
                await self._send(c, stream, envelope if c.combined else data)
            if market in self._drop_mid_candle and not event["k"]["x"]:
                self._drop_mid_candle.discard(market)
                self._drop([market], stream, event["k"]["t"])


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - manual/demo entry
    """``python -m fakes.binance --data data --speed 1 --live``: serve until Ctrl-C."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--live", action="store_true", help="shift each market's data to play as today")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    ds = Datasets.from_data_dir(args.data)
    offsets = live_offsets(ds, int(time.time() * 1000)) if args.live else 0
    playback = Playback(speed=args.speed, live=args.live)
    with FakeBinance(ds, playback=playback, time_offset_ms=offsets) as fake:
        print(fake.urls, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


def live_offsets(datasets: Datasets, now_ms: int) -> dict[str, int]:
    """Per market, the offset that maps its first data day onto today (a whole number of days).

    Whole days keep every interval up to 1d aligned. With ``Playback(live=True, speed=1)`` the
    market then plays the current time of day and event times are about now; REST serves up to
    the current, in-progress candle.
    """
    day = 86_400_000
    offsets: dict[str, int] = {}
    for market in MARKETS:
        firsts = [s.open_times[0] for s in datasets.in_market(market) if len(s)]
        if firsts:
            offsets[market] = (now_ms // day) * day - (min(firsts) // day) * day
    return offsets


if __name__ == "__main__":  # pragma: no cover
    main()
