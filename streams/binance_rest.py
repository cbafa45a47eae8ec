"""Binance REST klines: paging, request-weight accounting, and back-off that never hammers.

``BinanceRestClient`` reads ``GET /api/v3/klines`` (spot) and ``GET /fapi/v1/klines`` (USDT-M)
and returns closed candles only, as ``schemas.klines.Candle`` with ``source="rest"``, every field
parsed once from Binance's row ``[open_time, "o", "h", "l", "c", "v", close_time, "q", n, "V",
"Q", "ignore"]``.

It is synchronous (``httpx.Client``) on purpose: paging is sequential by nature (a page starts
after the last row of the previous one) and the per-IP request-weight budget, not latency, bounds
throughput, so concurrent requests would buy nothing but bans. Its callers (a Quix ``Source``'s
``run()`` in the source process, the gap repairer, the CLI backfill) are synchronous too.

Policy:

- **Paging**: ``startTime``/``endTime`` on open time (both inclusive) at the endpoint's page limit
  (1000 spot, 1500 futures); the next page starts one interval after the last row; a short page
  means the range is exhausted. Holes (exchange outages) simply come back as missing rows.
- **Weight**: every response's ``X-MBX-USED-WEIGHT-1M`` is the IP's weight used in the current
  minute, whoever spent it. Before a request whose weight would take that above
  ``weight_headroom`` × the limit (6000 spot, 2400 futures by default), the client sleeps until
  the next window (``weight_window_s``, Binance's calendar minute).
- **429**: sleep ``Retry-After`` (back-off if absent), then retry; asking again earlier would earn a
  418. **418** (IP ban): sleep ``Retry-After`` if it is at most ``max_ban_wait_s``, else raise
  ``BinanceBannedError`` naming when the ban ends.
- **Transient** (5xx, timeouts, connection errors): exponential back-off with jitter
  (``backoff_initial_s`` doubling up to ``backoff_max_s``, each delay drawn from its upper half),
  at most ``max_retries`` retries per request, then ``BinanceRestError``. Other 4xx (bad symbol,
  bad interval) raise at once: retrying cannot fix them.
- **Closed only**: a candle whose ``close_time`` is not yet in the past is in progress and dropped.

Counters live on ``client.stats`` (per client) and in prometheus_client metrics named
``binance_rest_*`` (per process, labelled by market), ready for a ``/metrics`` endpoint.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from prometheus_client import Counter, Gauge

from ohlcv.errors import OhlcvError
from schemas.intervals import interval_ms
from schemas.klines import Candle

logger = logging.getLogger(__name__)

RestMarket = Literal["spot", "usdm"]
KLINES_PATH: dict[str, str] = {"spot": "/api/v3/klines", "usdm": "/fapi/v1/klines"}
PAGE_LIMIT: dict[str, int] = {"spot": 1000, "usdm": 1500}
WEIGHT_LIMIT_PER_MIN: dict[str, int] = {"spot": 6000, "usdm": 2400}
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"

REQUESTS = Counter("binance_rest_requests_total", "Klines requests sent", ["market", "outcome"])
RETRIES = Counter("binance_rest_retries_total", "Klines requests retried", ["market", "reason"])
RATE_LIMITED = Counter("binance_rest_rate_limited_total", "429 answers (request weight exceeded)", ["market"])
BANNED = Counter("binance_rest_banned_total", "418 answers (IP banned)", ["market"])
WEIGHT_USED = Gauge("binance_rest_weight_used", "Last X-MBX-USED-WEIGHT-1M seen", ["market"])
BACKOFF_SECONDS = Counter(
    "binance_rest_backoff_seconds_total", "Time slept before requests", ["market", "reason"]
)
CANDLES = Counter("binance_rest_candles_total", "Closed candles returned", ["market"])


class BinanceRestError(OhlcvError):
    """A klines request failed for good; the message names the endpoint, parameters and answer."""


class BinanceBannedError(BinanceRestError):
    """Binance banned this IP (418) for longer than the client is willing to wait."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def klines_weight(market: str, limit: int) -> int:
    """Request weight of one klines call: spot 2; futures 1/2/5/10 for limit <100/<500/≤1000/more."""
    if market == "spot":
        return 2
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


@dataclass
class RestStats:
    """What one client did; the prometheus metrics carry the same per process."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429s
    banned: int = 0  # 418s
    server_errors: int = 0  # 5xx
    transport_errors: int = 0  # timeouts and connection errors
    #: the last X-MBX-USED-WEIGHT-1M seen
    weight_used: int = 0
    #: times the client waited for a new weight window instead of exceeding the budget
    weight_waits: int = 0
    #: seconds slept before requests (weight waits, Retry-After, back-off)
    backoff_s: float = 0.0
    candles: int = 0
    #: in-progress candles dropped (close_time not yet past)
    dropped_open: int = 0


class BinanceRestClient:
    """Closed klines from Binance REST; see the module docstring for the policy.

    ``base_url`` is ``https://api.binance.com`` (spot) or ``https://fapi.binance.com`` (usdm).
    ``sleep`` lets a caller make waits interruptible (e.g. ``threading.Event().wait``);
    ``now_ms`` is the clock that decides which candles are closed.
    """

    def __init__(
        self,
        base_url: str,
        market: RestMarket = "spot",
        *,
        weight_limit: int | None = None,
        weight_headroom: float = 0.9,
        weight_window_s: float = 60.0,
        timeout_s: float = 10.0,
        max_retries: int = 8,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_ban_wait_s: float = 300.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], object] = time.sleep,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        rng: random.Random | None = None,
    ) -> None:
        if market not in KLINES_PATH:
            raise ValueError(f"market={market!r}: expected spot or usdm")
        self.market = market
        self.path = KLINES_PATH[market]
        self.page_limit = PAGE_LIMIT[market]
        self.weight_limit = weight_limit or WEIGHT_LIMIT_PER_MIN[market]
        self.weight_headroom = weight_headroom
        self.weight_window_s = weight_window_s
        self.max_retries = max_retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_ban_wait_s = max_ban_wait_s
        self.stats = RestStats()
        self._sleep = sleep
        self._now_ms = now_ms
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        # httpx connects lazily: no I/O here
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport)
        self._weight_window = -1

    # --- public ------------------------------------------------------------------------------

    def klines(
        self,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int | None = None,
        *,
        limit: int | None = None,
    ) -> list[Candle]:
        """Every closed candle of ``symbol``/``interval`` opening in [start_ms, end_ms] (end: now)."""
        return [c for page in self.iter_pages(symbol, interval, start_ms, end_ms, limit=limit) for c in page]

    def iter_pages(
        self,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int | None = None,
        *,
        limit: int | None = None,
    ) -> Iterator[list[Candle]]:
        """The closed candles page by page, ascending, so a caller can produce as it goes."""
        step = interval_ms(interval)
        limit = min(limit or self.page_limit, self.page_limit)
        end = self._now_ms() if end_ms is None else end_ms
        cursor = start_ms
        while cursor <= end:
            params = {
                "symbol": symbol,
                "interval": interval,
                "startTime": cursor,
                "endTime": end,
                "limit": limit,
            }
            rows = self._get(params)
            received_at = self._now_ms()
            page: list[Candle] = []
            for row in rows:
                c = self._candle(symbol, interval, row, received_at, params)
                if c.close_time >= received_at:
                    self.stats.dropped_open += 1
                    continue
                page.append(c)
            self.stats.candles += len(page)
            CANDLES.labels(self.market).inc(len(page))
            logger.debug(
                "klines page symbol=%s interval=%s start=%s rows=%d closed=%d",
                symbol, interval, cursor, len(rows), len(page),
            )  # fmt: skip
            if page:
                yield page
            if len(rows) < limit:
                return
            cursor = int(rows[-1][0]) + step

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BinanceRestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one request, with every retry it may need -------------------------------------------

    def _get(self, params: dict[str, Any]) -> list[list[Any]]:
        weight = klines_weight(self.market, int(params["limit"]))
        where = f"{self.path} {params}"
        retries = 0
        while True:
            self._respect_weight(weight)
            self.stats.requests += 1
            wait_s: float | None = None
            try:
                resp = self._http.get(self.path, params=params)
            except httpx.TimeoutException as exc:
                reason, detail = "timeout", f"timed out: {exc!r}"
                self.stats.transport_errors += 1
                REQUESTS.labels(self.market, "timeout").inc()
            except httpx.TransportError as exc:
                reason, detail = "connection", f"connection error: {exc!r}"
                self.stats.transport_errors += 1
                REQUESTS.labels(self.market, "connection").inc()
            else:
                self._note_weight(resp)
                status = resp.status_code
                REQUESTS.labels(self.market, str(status)).inc()
                if status == 200:
                    return self._rows(resp, where)
                detail = f"answered {status}: {resp.text[:200]}"
                retry_after = _retry_after_s(resp)
                if status == 429:
                    reason, wait_s = "429", retry_after
                    self.stats.rate_limited += 1
                    RATE_LIMITED.labels(self.market).inc()
                elif status == 418:
                    reason, wait_s = "418", retry_after
                    self.stats.banned += 1
                    BANNED.labels(self.market).inc()
                    if wait_s is not None and wait_s > self.max_ban_wait_s:
                        raise BinanceBannedError(
                            f"{where}: IP banned for {wait_s:.0f}s (more than max_ban_wait_s="
                            f"{self.max_ban_wait_s:.0f}s): {resp.text[:200]}",
                            wait_s,
                        )
                elif status >= 500:
                    reason = "5xx"
                    self.stats.server_errors += 1
                else:
                    raise BinanceRestError(f"{where} {detail}")
            if retries >= self.max_retries:
                raise BinanceRestError(f"{where} failed after {retries} retries; last attempt {detail}")
            retries += 1
            self.stats.retries += 1
            RETRIES.labels(self.market, reason).inc()
            delay = wait_s if wait_s is not None else self._backoff(retries)
            logger.warning(
                "klines retry=%d reason=%s wait_s=%.2f %s %s", retries, reason, delay, where, detail
            )
            self._pause(delay, reason)

    def _backoff(self, retry: int) -> float:
        cap = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** (retry - 1))
        return cap / 2 + self._rng.uniform(0, cap / 2)

    def _pause(self, seconds: float, reason: str) -> None:
        if seconds <= 0:
            return
        self.stats.backoff_s += seconds
        BACKOFF_SECONDS.labels(self.market, reason).inc(seconds)
        self._sleep(seconds)

    # --- request weight ----------------------------------------------------------------------

    def _window(self) -> int:
        return int(time.time() // self.weight_window_s)

    def _note_weight(self, resp: httpx.Response) -> None:
        raw = resp.headers.get(WEIGHT_HEADER)
        if raw is None or not raw.isdigit():
            return
        self.stats.weight_used = int(raw)
        self._weight_window = self._window()
        WEIGHT_USED.labels(self.market).set(self.stats.weight_used)

    def _respect_weight(self, weight: int) -> None:
        """Wait for the next window rather than go over the budget (the header counts every client)."""
        window = self._window()
        used = self.stats.weight_used if self._weight_window == window else 0
        if used + weight <= self.weight_limit * self.weight_headroom:
            return
        wait = (window + 1) * self.weight_window_s - time.time() + 0.05  # 50 ms for clock skew
        self.stats.weight_waits += 1
        logger.info(
            "klines weight used=%d +%d over %.0f%% of %d, waiting %.2fs for the next window",
            used, weight, self.weight_headroom * 100, self.weight_limit, wait,
        )  # fmt: skip
        self._pause(wait, "weight")

    # --- parsing -----------------------------------------------------------------------------

    def _rows(self, resp: httpx.Response, where: str) -> list[list[Any]]:
        try:
            rows = resp.json()
        except ValueError as exc:
            raise BinanceRestError(
                f"{where} answered 200 with a body that is not JSON: {resp.text[:200]}"
            ) from exc
        if not isinstance(rows, list):
            raise BinanceRestError(
                f"{where} answered 200 with {type(rows).__name__}, expected rows: {rows!r:.200}"
            )
        return rows

    def _candle(
        self, symbol: str, interval: str, row: Any, received_at: int, params: dict[str, Any]
    ) -> Candle:
        try:
            open_time, o, h, low, c, v, close_time, q, n, vb, qb = row[:11]
            return Candle(
                symbol=symbol,
                interval=interval,
                open_time=int(open_time),
                close_time=int(close_time),
                open=float(o),
                high=float(h),
                low=float(low),
                close=float(c),
                volume=float(v),
                quote_volume=float(q),
                trades=int(n),
                taker_buy_base=float(vb),
                taker_buy_quote=float(qb),
                is_closed=True,
                source="rest",
                event_time=int(close_time),
                received_at=received_at,
            )
        except (TypeError, ValueError) as exc:
            raise BinanceRestError(f"{self.path} {params}: malformed kline row {row!r:.200}: {exc}") from exc


def _retry_after_s(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None
