"""The gap orchestrator: repairs open gap segments from Binance REST, through Kafka.

Ownership. The candle topology owns ``gap_segments``: it detects segments, shrinks and splits
them as late candles arrive and marks them ``repaired`` (emitting ``gap_repaired``). The
orchestrator never writes there. Its own lifecycle of a segment lives in ``gap_repairs`` (same
key, ReplacingMergeTree(version)); ``segment_lifecycle`` joins both into the effective state:
``repaired`` when gap_segments says so, else the gap_repairs state when there is one, else the
gap_segments state (``open``). Every attempt is one row of ``backfill_runs``
(pending -> running -> success | partial | error).

One poll (``run_once``; ``run(stop_event)`` repeats it every ``poll_interval_s``):

1. **Reconcile** what earlier attempts started. A segment the topology now reports repaired is
   done: ``kline_gap_mttr_seconds`` observes detection -> repair (the topology's own times), the
   run is ``success``. A segment whose produced candles are all stored but that is still open
   holds exactly what Binance REST did not return: those bars (the segment and any piece the
   topology split off inside the attempted range) are an exchange outage, not ours. They become
   ``exchange_gap`` once REST came back without them ``empty_confirmations`` times (default 2,
   ``empty_recheck_s`` apart), and are never tried again. Candles not stored within
   ``landing_timeout_s`` (the topology is down) fail the attempt.
2. **Dispatch** the queue: segments whose effective state is ``open``, or ``failed`` with their
   back-off elapsed (``backoff_initial_s`` doubling up to ``backoff_max_s``, at most
   ``max_attempts``), most missing bars first, then the oldest. ``concurrency`` worker threads
   repair them: fetch the segment's range from REST page by page (closed candles only) and
   produce every candle REST has in it onto the raw topic as a closed kline with
   ``source="rest"`` (``streams.replay``: murmur2 partitioning, the same partition as the live
   stream of the key). The topology treats them as late fills and closes the segment itself.
   A range REST has nothing for produces nothing and counts as one empty answer.

Binance limits. Workers share one ``BinanceRestClient`` per market (its weight accounting reads
the IP-wide ``X-MBX-USED-WEIGHT-1M``) behind a ``RestGate``: at most ``max_inflight_requests``
requests in flight per market (default 1: the weight budget, not latency, bounds REST
throughput, and a second request in flight when a 429 arrives would earn a 418 ban), and any
pause one worker's client takes (weight wait, 429 Retry-After, 418 ban, 5xx back-off) holds every
worker of that market. A 429 or 418 closes the gate for its Retry-After before the request's slot
is released, so no other worker's request slips in between the answer and the client's sleep. A
ban longer than the client will sleep (``BinanceBannedError``) fails the attempt (retried after
the ban) and keeps the gate closed until the ban ends.

Intervals built by the resampler (5m, 1h ...) are not fetched: they are rebuilt from the
repaired 1m bars; ``BackfillConfig.intervals`` defaults to ``("1m",)``. Run one orchestrator
per deployment: two would repair the same segments twice (harmless, every write is idempotent,
but wasteful).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import httpx
from clickhouse_connect.driver.client import Client
from prometheus_client import Counter, Gauge, Histogram

from ohlcv.errors import ClickHouseUnavailableError, OhlcvError
from schemas.intervals import interval_ms
from schemas.topics import RAW_KLINES
from streams.binance_rest import BinanceBannedError, BinanceRestClient, BinanceRestError, RestMarket

if TYPE_CHECKING:  # streams.replay imports quixstreams: only the orchestrator's workers need it
    from streams.replay import RawProducer

logger = logging.getLogger(__name__)

MTTR = Histogram(
    "kline_gap_mttr_seconds",
    "Gap segment detection to repair, seconds (observed when the orchestrator sees it repaired)",
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 21_600, 86_400),
)
QUEUE_SIZE = Gauge(
    "ohlcv_backfill_queue_size", "Gap segments waiting for a repair attempt (due now or scheduled later)"
)
RUNS = Counter("ohlcv_backfill_runs_total", "Finished repair attempts by outcome", ["status"])
RETRIES = Counter("ohlcv_backfill_retries_total", "Repair attempts of segments whose previous attempt failed")

Key = tuple[str, str, int]

_REPAIR_COLUMNS = [
    "symbol", "interval", "segment_id", "state", "attempts", "empty_answers", "rest_bars",
    "last_attempt_at", "next_attempt_at", "last_error", "run_id", "updated_at", "version",
]  # fmt: skip
_RUN_COLUMNS = [
    "run_id", "symbol", "interval", "segment_id", "from_open_time", "to_open_time", "expected_bars",
    "loaded_bars", "status", "attempts", "last_error", "started_at", "finished_at", "version",
]  # fmt: skip


class BackfillError(OhlcvError):
    """The orchestrator could not read or write its tables; the message names the table."""


class BackfillStoppedError(BackfillError):
    """The orchestrator is stopping; raised inside a worker's wait to end the attempt early."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ms(v: Any) -> int | None:
    return None if v is None else int(v)


# --- the effective lifecycle of a segment -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentLifecycle:
    """One gap segment as the API and the orchestrator see it (times in ms)."""

    symbol: str
    interval: str
    segment_id: int
    segment_end: int
    from_open_time: int
    to_open_time: int
    missing_bars: int
    #: effective: repaired | exchange_gap | failed | repairing | open | merged
    state: str
    #: gap_segments.state (the topology's, or a scan's)
    topology_state: str
    #: gap_repairs.state, '' when the orchestrator never touched the segment
    repair_state: str
    detected_at: int
    repaired_at: int | None
    attempts: int
    empty_answers: int
    rest_bars: int
    last_attempt_at: int | None
    next_attempt_at: int | None
    last_error: str
    run_id: str
    updated_at: int

    @property
    def key(self) -> Key:
        return (self.symbol, self.interval, self.segment_id)


_LIFECYCLE_SQL = """
SELECT g.symbol, g.interval, g.segment_id, g.segment_end,
       toUnixTimestamp64Milli(g.from_open_time), toUnixTimestamp64Milli(g.to_open_time), g.missing_bars,
       multiIf(g.state = 'repaired', 'repaired', g.state = 'merged', 'merged',
               r.state != '', r.state, g.state) AS effective,
       g.state, r.state, toUnixTimestamp64Milli(g.detected_at), toUnixTimestamp64Milli(g.repaired_at),
       r.attempts, r.empty_answers, r.rest_bars, toUnixTimestamp64Milli(r.last_attempt_at),
       toUnixTimestamp64Milli(r.next_attempt_at), r.last_error, r.run_id, toUnixTimestamp64Milli(g.updated_at)
FROM
(
    SELECT * FROM gap_segments FINAL
    WHERE ({any_symbol:UInt8} OR symbol IN {symbols:Array(String)})
      AND ({any_interval:UInt8} OR interval IN {intervals:Array(String)})
) AS g
LEFT JOIN
(
    SELECT * FROM gap_repairs FINAL
    WHERE ({any_symbol:UInt8} OR symbol IN {symbols:Array(String)})
      AND ({any_interval:UInt8} OR interval IN {intervals:Array(String)})
) AS r
ON g.symbol = r.symbol AND g.interval = r.interval AND g.segment_id = r.segment_id
WHERE if({work:UInt8},
         effective IN ('open', 'repairing', 'failed') OR (g.state = 'repaired' AND r.state != 'repaired'),
         {any_state:UInt8} OR effective IN {states:Array(String)})
ORDER BY g.symbol, g.interval, g.segment_id
"""


def segment_lifecycles(
    client: Client,
    *,
    symbols: Sequence[str] | None,
    intervals: Sequence[str] | None,
    states: Sequence[str] | None = None,
    work: bool = False,
) -> list[SegmentLifecycle]:
    """Gap segments of the given streams (None: all) with their effective state (the topology's
    repaired/merged wins, then the orchestrator's state, then the topology's), ascending;
    ``states`` keeps those whose effective state is one of them, ``work`` what still needs work."""
    params = {
        "any_symbol": int(symbols is None),
        "symbols": list(symbols or []),
        "any_interval": int(intervals is None),
        "intervals": list(intervals or []),
        "any_state": int(states is None),
        "states": list(states or []),
        "work": int(work),
    }
    try:
        rows = client.query(_LIFECYCLE_SQL, parameters=params).result_rows
    except Exception as exc:
        raise BackfillError(
            f"reading gap_segments FINAL joined with gap_repairs FINAL failed: {exc}"
        ) from exc
    return [
        SegmentLifecycle(
            symbol=r[0],
            interval=r[1],
            segment_id=int(r[2]),
            segment_end=int(r[3]),
            from_open_time=int(r[4]),
            to_open_time=int(r[5]),
            missing_bars=int(r[6]),
            state=r[7],
            topology_state=r[8],
            repair_state=r[9],
            detected_at=int(r[10]),
            repaired_at=_ms(r[11]),
            attempts=int(r[12]),
            empty_answers=int(r[13]),
            rest_bars=int(r[14]),
            last_attempt_at=_ms(r[15]),
            next_attempt_at=_ms(r[16]),
            last_error=r[17],
            run_id=r[18],
            updated_at=int(r[19]),
        )
        for r in rows
    ]


def segment_lifecycle(
    client: Client, symbol: str, interval: str, *, states: Sequence[str] | None = None
) -> list[SegmentLifecycle]:
    """Every gap segment of the stream with its effective state, ascending by segment id.

    ``states`` keeps only segments whose effective state is one of them.
    """
    return segment_lifecycles(client, symbols=[symbol], intervals=[interval], states=states)


# --- the orchestrator's rows ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackfillRun:
    """One repair attempt of one segment (a row of ``backfill_runs``)."""

    run_id: str
    symbol: str
    interval: str
    segment_id: int
    from_open_time: int
    to_open_time: int
    expected_bars: int
    loaded_bars: int
    status: str
    attempts: int
    last_error: str
    started_at: int
    finished_at: int | None

    def row(self, version: int) -> list[Any]:
        return [
            self.run_id, self.symbol, self.interval, self.segment_id, self.from_open_time,
            self.to_open_time, self.expected_bars, self.loaded_bars, self.status, self.attempts,
            self.last_error, self.started_at, self.finished_at, version,
        ]  # fmt: skip


_RUNS_SELECT = (
    "SELECT run_id, symbol, interval, segment_id, toUnixTimestamp64Milli(from_open_time), "
    "toUnixTimestamp64Milli(to_open_time), expected_bars, loaded_bars, status, attempts, last_error, "
    "toUnixTimestamp64Milli(started_at), toUnixTimestamp64Milli(finished_at) FROM backfill_runs FINAL "
)


def backfill_runs(
    client: Client, symbol: str | None = None, interval: str | None = None
) -> list[BackfillRun]:
    """Runs (under FINAL), oldest first, optionally of one symbol/interval."""
    try:
        rows = client.query(
            _RUNS_SELECT
            + "WHERE ({any_s:UInt8} OR symbol = {s:String}) AND ({any_i:UInt8} OR interval = {i:String}) "
            "ORDER BY started_at, run_id",
            parameters={
                "any_s": int(symbol is None),
                "s": symbol or "",
                "any_i": int(interval is None),
                "i": interval or "",
            },
        ).result_rows
    except Exception as exc:
        raise BackfillError(f"reading backfill_runs FINAL failed: {exc}") from exc
    return [
        BackfillRun(
            r[0],
            r[1],
            r[2],
            int(r[3]),
            int(r[4]),
            int(r[5]),
            int(r[6]),
            int(r[7]),
            r[8],
            int(r[9]),
            r[10],
            int(r[11]),
            _ms(r[12]),
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class _Repair:
    """A row of ``gap_repairs``."""

    symbol: str
    interval: str
    segment_id: int
    state: str
    attempts: int
    empty_answers: int
    rest_bars: int
    last_attempt_at: int | None
    next_attempt_at: int | None
    last_error: str
    run_id: str

    @classmethod
    def of(cls, s: SegmentLifecycle) -> _Repair:
        return cls(s.symbol, s.interval, s.segment_id, s.repair_state or s.state, s.attempts, s.empty_answers,
                   s.rest_bars, s.last_attempt_at, s.next_attempt_at, s.last_error, s.run_id)  # fmt: skip

    def row(self, now: int, version: int) -> list[Any]:
        return [
            self.symbol, self.interval, self.segment_id, self.state, self.attempts, self.empty_answers,
            self.rest_bars, self.last_attempt_at, self.next_attempt_at, self.last_error, self.run_id, now,
            version,
        ]  # fmt: skip


# --- Binance request gate ---------------------------------------------------------------------


class RestGate:
    """Shared by every worker of one market: bounded requests in flight, and shared pauses.

    ``pause`` is given to the market's BinanceRestClient as its ``sleep``: whatever a client waits
    for (a new weight window, Retry-After of a 429 or 418, back-off after a 5xx), every request of
    the market waits for it too. Waits end early with BackfillStoppedError when ``stop`` is set.
    """

    def __init__(self, stop: threading.Event, max_inflight: int = 1) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, got {max_inflight}")
        self._stop = stop
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._until = 0.0  # time.monotonic()
        self.pauses = 0
        self.paused_s = 0.0

    @property
    def remaining_s(self) -> float:
        with self._lock:
            return max(0.0, self._until - time.monotonic())

    def hold(self, seconds: float) -> None:
        """Send nothing on this market for ``seconds`` (from now); counts only what it extends."""
        if seconds <= 0:
            return
        with self._lock:
            now = time.monotonic()
            extension = now + seconds - max(self._until, now)
            if extension > 0:
                self._until = now + seconds
                if extension > 0.1:  # the client's own sleep right after the transport's hold
                    self.pauses += 1
                self.paused_s += extension

    def pause(self, seconds: float) -> None:
        self.hold(seconds)
        self.wait_open()

    def wait_open(self) -> None:
        while True:
            remaining = self.remaining_s
            if remaining <= 0:
                if self._stop.is_set():
                    raise BackfillStoppedError("orchestrator stopping")
                return
            if self._stop.wait(min(remaining, 0.25)):
                raise BackfillStoppedError("orchestrator stopping")

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one in-flight request slot, once no pause is in force."""
        self.wait_open()
        while not self._slots.acquire(timeout=0.25):
            if self._stop.is_set():
                raise BackfillStoppedError("orchestrator stopping")
        try:
            self.wait_open()  # a pause may have begun while this waited for the slot
            yield
        finally:
            self._slots.release()


def _retry_after_s(response: httpx.Response, default_s: float = 1.0) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", default_s)))
    except ValueError:
        return default_s


class _GatedTransport(httpx.BaseTransport):
    """httpx transport that sends each request through a RestGate slot."""

    def __init__(self, gate: RestGate, inner: httpx.BaseTransport | None = None) -> None:
        self.gate = gate
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.gate.slot():
            response = self.inner.handle_request(request)
            if response.status_code in (429, 418):
                # close the gate before the slot is free: the client sleeps Retry-After only after
                # this returns, and a request another worker sent meanwhile would earn a (longer) ban
                self.gate.hold(_retry_after_s(response))
            return response

    def close(self) -> None:
        self.inner.close()


# --- the orchestrator -------------------------------------------------------------------------


@dataclass(frozen=True)
class BackfillConfig:
    """How the orchestrator works; see the module docstring. Durations in seconds."""

    poll_interval_s: float = 1.0
    concurrency: int = 4
    #: intervals fetched from Binance (resampled ones are rebuilt by the topology)
    intervals: tuple[str, ...] = ("1m",)
    #: symbols to repair; None: every symbol with gap segments
    symbols: tuple[str, ...] | None = None
    default_market: str = "spot"
    #: symbol -> market, for symbols not on ``default_market``
    markets: Mapping[str, str] = field(default_factory=dict)
    raw_topic: str = RAW_KLINES.name
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 600.0
    #: attempts per segment before it stays failed (reported, no more retries)
    max_attempts: int = 10
    #: empty REST answers for a range before it is an exchange gap
    empty_confirmations: int = 2
    empty_recheck_s: float = 30.0
    #: how long produced candles may take to be stored by the topology
    landing_timeout_s: float = 60.0
    max_inflight_requests: int = 1

    def __post_init__(self) -> None:
        for name in ("poll_interval_s", "backoff_initial_s", "backoff_max_s", "landing_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("concurrency", "max_attempts", "empty_confirmations", "max_inflight_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.empty_recheck_s < 0:
            raise ValueError(f"empty_recheck_s must not be negative, got {self.empty_recheck_s}")

    def market_of(self, symbol: str) -> str:
        return self.markets.get(symbol, self.default_market)

    def backoff_s(self, attempt: int) -> float:
        """Delay before the attempt after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** max(0, attempt - 1)))


@dataclass
class _Pending:
    """An attempt whose candles were produced; waiting for the topology to store them."""

    run: BackfillRun
    market: str
    #: stored bars in the run's range once every produced candle is stored
    target: int
    produced: int
    started: float  # time.monotonic()
    landed_at: int | None = None


@dataclass(frozen=True)
class PollResult:
    """What one poll did."""

    #: segments an attempt was started for (symbol, interval, segment_id)
    dispatched: tuple[Key, ...]
    #: lifecycle rows written while reconciling earlier attempts
    reconciled: int
    queue_size: int


class Orchestrator:
    """Repairs gap segments; see the module docstring.

    ``rest_urls`` maps each market (spot, usdm) to its REST base URL; ``rest_options`` go to every
    BinanceRestClient (e.g. ``max_ban_wait_s``). ``client`` is a ClickHouse client on the
    platform's database, used under a lock by every worker. Nothing connects before the first
    poll. ``close()`` (or leaving ``run``) stops the workers and releases the clients.
    """

    def __init__(
        self,
        client: Client,
        *,
        rest_urls: Mapping[str, str],
        broker_address: str,
        config: BackfillConfig | None = None,
        rest_options: Mapping[str, Any] | None = None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self.client = client
        self.broker_address = broker_address
        self.config = config or BackfillConfig()
        self.clock_ms = clock_ms
        self._stop = threading.Event()
        self.gates = {m: RestGate(self._stop, self.config.max_inflight_requests) for m in rest_urls}
        #: one client per market, shared by the workers (httpx connects lazily)
        self.rest = {
            m: BinanceRestClient(
                url,
                cast(RestMarket, m),
                transport=_GatedTransport(self.gates[m]),
                sleep=self.gates[m].pause,
                **dict(rest_options or {}),
            )
            for m, url in rest_urls.items()
        }
        self._producer: RawProducer | None = None
        self._pool = ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="backfill")
        self._ch_lock = threading.Lock()
        self._lock = threading.Lock()
        self._in_flight: dict[Key, Future[None]] = {}
        self._pending: dict[Key, _Pending] = {}
        self._seen_open: set[Key] = set()
        self._version = 0
        self._started_ms = clock_ms()
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------------

    def run(self, stop_event: threading.Event) -> None:
        """Poll every ``poll_interval_s`` until ``stop_event`` is set, then close."""
        logger.info(
            "backfill orchestrator started poll_s=%.2f concurrency=%d markets=%s",
            self.config.poll_interval_s, self.config.concurrency, sorted(self.rest),
        )  # fmt: skip
        try:
            while not stop_event.is_set():
                try:
                    self.run_once(wait=False)
                except (BackfillError, ClickHouseUnavailableError) as exc:
                    logger.warning(
                        "backfill poll failed, retrying in %.2fs: %s", self.config.poll_interval_s, exc
                    )
                stop_event.wait(self.config.poll_interval_s)
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        # queued attempts still start and stop at the closed gate, so each run row ends as error
        self._pool.shutdown(wait=True)
        if self._producer is not None:
            from streams.replay import ReplayError

            try:
                self._producer.flush()
            except ReplayError as exc:
                logger.warning("backfill producer flush at close failed: %s", exc)
        for rest in self.rest.values():
            rest.close()
        logger.info("backfill orchestrator stopped")

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one poll --------------------------------------------------------------------------

    def run_once(self, *, wait: bool = True) -> PollResult:
        """Reconcile earlier attempts, then start attempts for the due segments.

        With ``wait`` (tests, one-shot use) every due segment is attempted, ``concurrency`` at a
        time, and this returns when all attempts have finished. Otherwise (``run``) only free
        workers take segments and this returns at once.
        """
        if self._closed:
            raise BackfillError("the orchestrator is closed")
        now = self.clock_ms()
        rows = self._load()
        reconciled = self._reconcile(rows, now)
        if reconciled:
            rows = self._load()
        due, waiting = self._queue(rows, now)
        with self._lock:
            free = len(due) if wait else max(0, self.config.concurrency - len(self._in_flight))
        take = due[:free]
        futures = [self._dispatch(s) for s in take]
        queue_size = len(due) - len(take) + waiting
        QUEUE_SIZE.set(queue_size)
        if wait and futures:
            wait_futures(futures)
        return PollResult(dispatched=tuple(s.key for s in take), reconciled=reconciled, queue_size=queue_size)

    def _load(self) -> list[SegmentLifecycle]:
        with self._ch_lock:
            return segment_lifecycles(
                self.client, symbols=self.config.symbols, intervals=self.config.intervals, work=True
            )

    def _queue(self, rows: list[SegmentLifecycle], now: int) -> tuple[list[SegmentLifecycle], int]:
        """Due segments by priority, and how many wait for a later attempt."""
        with self._lock:
            busy = set(self._in_flight) | set(self._pending)
            ranges = [(p.run.symbol, p.run.interval, p.run.from_open_time, p.run.to_open_time)
                      for p in self._pending.values()]  # fmt: skip
        due: list[SegmentLifecycle] = []
        waiting = 0
        for s in rows:
            if s.state not in ("open", "failed") or s.key in busy:
                continue
            if any(s.symbol == a and s.interval == b and s.from_open_time <= hi and s.to_open_time >= lo
                   for a, b, lo, hi in ranges):  # fmt: skip
                continue  # a piece of a range whose attempt still waits for the topology
            if s.attempts >= self.config.max_attempts:
                continue  # given up: stays failed, reported by segment_lifecycle
            if s.next_attempt_at is not None and s.next_attempt_at > now:
                waiting += 1
                continue
            due.append(s)
        due.sort(key=lambda s: (-s.missing_bars, s.detected_at, s.symbol, s.interval, s.segment_id))
        return due, waiting

    def _dispatch(self, s: SegmentLifecycle) -> Future[None]:
        step = interval_ms(s.interval)
        run = BackfillRun(
            run_id=uuid.uuid4().hex, symbol=s.symbol, interval=s.interval, segment_id=s.segment_id,
            from_open_time=s.from_open_time, to_open_time=s.to_open_time,
            expected_bars=(s.to_open_time - s.from_open_time) // step + 1, loaded_bars=0, status="pending",
            attempts=s.attempts + 1, last_error="", started_at=self.clock_ms(), finished_at=None,
        )  # fmt: skip
        self._write_run(run)
        with self._lock:
            future = self._pool.submit(self._work, s, run)
            self._in_flight[s.key] = future
        return future

    # --- one attempt (worker thread) -------------------------------------------------------

    def _work(self, s: SegmentLifecycle, run: BackfillRun) -> None:
        try:
            self._attempt(s, run)
        except Exception:
            logger.exception(
                "backfill attempt crashed key=%s:%s segment=%s", s.symbol, s.interval, s.segment_id
            )
        finally:
            with self._lock:
                self._in_flight.pop(s.key, None)

    def _attempt(self, s: SegmentLifecycle, run: BackfillRun) -> None:
        cfg = self.config
        now = self.clock_ms()
        market = cfg.market_of(s.symbol)
        if s.state == "failed":
            RETRIES.inc()
        run = replace(run, status="running", started_at=now)
        repair = replace(_Repair.of(s), state="repairing", attempts=run.attempts, last_attempt_at=now,
                         next_attempt_at=None, run_id=run.run_id)  # fmt: skip
        self._write_repair(repair)
        self._write_run(run)
        from streams.replay import ReplayError, replay_to_kafka

        rest_bars = produced = 0
        produced_times: set[int] = set()
        try:
            rest = self.rest.get(market)
            if rest is None:
                raise BinanceRestError(f"no REST URL for market {market!r} (symbol {s.symbol})")
            stored = self._stored_times(s.symbol, s.interval, run.from_open_time, run.to_open_time)
            for page in rest.iter_pages(s.symbol, s.interval, run.from_open_time, run.to_open_time):
                in_range = [c for c in page if run.from_open_time <= c.open_time <= run.to_open_time]
                rest_bars += len(in_range)
                # every bar of the range is missing as far as the topology knows, so every one
                # REST has goes to it, stored or not: a stored one is either known to it (it
                # changes nothing) or was stored by a batch whose events never were (a crash
                # between the sink's inserts, its raw records lost with a memory-only broker),
                # which the topology announces now and so closes the gap it saw there
                if in_range:
                    replay_to_kafka(
                        self.broker_address, in_range, topic=cfg.raw_topic, source="rest", market=market,
                        producer=self._get_producer(),
                    )  # fmt: skip
                    produced += len(in_range)
                    produced_times.update(c.open_time for c in in_range)
        except BackfillStoppedError:
            # a shutdown is not the segment's failure: its previous lifecycle row comes back
            self._write_repair(_Repair.of(s))
            error = "orchestrator stopped during the attempt"
            self._finish(replace(run, status="error", last_error=error, loaded_bars=produced,
                                 finished_at=self.clock_ms()))  # fmt: skip
            return
        except BinanceBannedError as exc:
            self.gates[market].hold(exc.retry_after_s)
            self._fail(repair, run, str(exc), self.clock_ms() + int(exc.retry_after_s * 1000), produced)
            return
        except (BinanceRestError, ReplayError, BackfillError, ClickHouseUnavailableError) as exc:
            delay_ms = int(cfg.backoff_s(run.attempts) * 1000)
            self._fail(repair, run, str(exc), self.clock_ms() + delay_ms, produced)
            return
        repair = replace(repair, rest_bars=rest_bars)
        if rest_bars == 0:
            self._empty_answer(repair, run, first_hand=True)
            return
        run = replace(run, loaded_bars=produced)
        with self._lock:
            self._pending[s.key] = _Pending(
                run=run,
                market=market,
                target=len(stored | produced_times),
                produced=produced,
                started=time.monotonic(),
            )
        self._write_repair(repair)
        self._write_run(run)
        logger.info(
            "backfill produced key=%s:%s segment=%d from=%d to=%d rest_bars=%d produced=%d attempt=%d",
            s.symbol, s.interval, s.segment_id, run.from_open_time, run.to_open_time, rest_bars, produced,
            run.attempts,
        )  # fmt: skip

    def _empty_answer(self, repair: _Repair, run: BackfillRun, *, first_hand: bool) -> None:
        """REST had no candle for what is left of ``repair``'s segment: one more confirmation."""
        cfg = self.config
        now = self.clock_ms()
        empties = repair.empty_answers + 1
        final = empties >= cfg.empty_confirmations
        repair = replace(
            repair, state="exchange_gap" if final else "open", empty_answers=empties,
            next_attempt_at=None if final else now + int(cfg.empty_recheck_s * 1000),
        )  # fmt: skip
        self._write_repair(repair)
        if first_hand:
            self._finish(replace(run, status="partial", loaded_bars=0, finished_at=now))
        logger.info(
            "backfill exchange answered empty key=%s:%s segment=%d empty_answers=%d/%d -> %s",
            repair.symbol, repair.interval, repair.segment_id, empties, cfg.empty_confirmations, repair.state,
        )  # fmt: skip

    def _fail(self, repair: _Repair, run: BackfillRun, error: str, next_at: int, produced: int) -> None:
        give_up = repair.attempts >= self.config.max_attempts
        now = self.clock_ms()
        self._write_repair(
            replace(
                repair, state="failed", last_error=error[:2000], next_attempt_at=None if give_up else next_at
            )
        )
        self._finish(
            replace(run, status="error", last_error=error[:2000], loaded_bars=produced, finished_at=now)
        )
        log = logger.error if give_up else logger.warning
        log(
            "backfill attempt failed key=%s:%s segment=%d attempt=%d/%d next_in_s=%s: %s",
            repair.symbol, repair.interval, repair.segment_id, repair.attempts, self.config.max_attempts,
            "never" if give_up else f"{max(0, next_at - now) / 1000:.1f}", error,
        )  # fmt: skip

    # --- reconcile (poll thread) -----------------------------------------------------------

    def _reconcile(self, rows: list[SegmentLifecycle], now: int) -> int:
        cfg = self.config
        written = 0
        with self._lock:
            in_flight = set(self._in_flight)
        for s in rows:
            key = s.key
            if key in in_flight:
                continue
            if s.topology_state == "repaired":
                if s.repair_state == "repaired":
                    continue
                with self._lock:
                    pending = self._pending.pop(key, None)
                if key in self._seen_open or pending is not None or (s.repaired_at or 0) >= self._started_ms:
                    MTTR.observe(max(0, (s.repaired_at or now) - s.detected_at) / 1000)
                self._seen_open.discard(key)
                self._write_repair(replace(_Repair.of(s), state="repaired", next_attempt_at=None))
                if pending is not None:
                    self._finish(replace(pending.run, status="success", finished_at=now))
                elif s.repair_state == "repairing" and s.run_id:
                    self._finish_by_id(s.run_id, "success", now)
                written += 1
                continue
            if s.state in ("open", "failed", "repairing"):
                self._seen_open.add(key)
            if s.repair_state != "repairing":
                continue
            with self._lock:
                p = self._pending.get(key)
            if p is None:
                # started by an earlier process: its candles may or may not be stored; after the
                # landing timeout, attempt again (producing the same candles twice is harmless)
                if s.last_attempt_at is None or now - s.last_attempt_at > cfg.landing_timeout_s * 1000:
                    run = self._run_by_id(s.run_id) if s.run_id else None
                    error = f"attempt {s.run_id or '?'} of an earlier orchestrator did not finish"
                    if run is not None:
                        self._fail(_Repair.of(s), run, error, now, run.loaded_bars)
                    else:
                        self._write_repair(replace(_Repair.of(s), state="failed", last_error=error,
                                                   next_attempt_at=now))  # fmt: skip
                    written += 1
                continue
            run = p.run
            present = self._count_stored(s.symbol, s.interval, run.from_open_time, run.to_open_time)
            if p.landed_at is None:
                if present >= p.target:
                    # classify at a later poll: the topology writes segment rows right after the
                    # candles of the same batch
                    p.landed_at = now
                elif time.monotonic() - p.started > cfg.landing_timeout_s:
                    with self._lock:
                        self._pending.pop(key, None)
                    error = (
                        f"produced {p.produced} candles to {cfg.raw_topic} but only {present} of the "
                        f"{p.target} bars expected are stored within {cfg.landing_timeout_s:.0f}s; "
                        "is the candle topology running?"
                    )
                    self._fail(
                        _Repair.of(s), run, error, now + int(cfg.backoff_s(run.attempts) * 1000), p.produced
                    )
                    written += 1
                continue
            with self._lock:
                self._pending.pop(key, None)
            written += 1
            if present >= run.expected_bars:
                # every bar is stored but the topology did not close the segment (it does not hold
                # it, e.g. a scan opened it while the topology ran): the orchestrator closes it
                MTTR.observe(max(0, now - s.detected_at) / 1000)
                self._seen_open.discard(key)
                self._write_repair(replace(_Repair.of(s), state="repaired", next_attempt_at=None))
                self._finish(replace(run, status="success", finished_at=now))
                continue
            # what is left in the range is what REST did not return: the segment and any piece
            # split off it inside the range count one empty answer
            for other in rows:
                if (
                    other.symbol == s.symbol and other.interval == s.interval
                    and other.state in ("open", "repairing")
                    and other.from_open_time <= run.to_open_time and other.to_open_time >= run.from_open_time
                    and other.key not in in_flight
                ):  # fmt: skip
                    base = _Repair.of(other)
                    if other.key != key:
                        base = replace(base, attempts=max(base.attempts, run.attempts), run_id=run.run_id,
                                       last_attempt_at=run.started_at, empty_answers=0)  # fmt: skip
                    self._empty_answer(replace(base, rest_bars=0), run, first_hand=False)
            self._finish(replace(run, status="partial", finished_at=now))
        return written

    # --- ClickHouse ------------------------------------------------------------------------

    def _next_version(self) -> int:
        with self._lock:
            self._version = max(self._version + 1, time.time_ns() // 1000)
            return self._version

    def _insert(self, table: str, rows: list[list[Any]], columns: list[str]) -> None:
        try:
            with self._ch_lock:
                self.client.insert(table, rows, column_names=columns)
        except Exception as exc:
            raise BackfillError(f"writing {len(rows)} rows to {table} failed: {exc}") from exc

    def _write_repair(self, r: _Repair) -> None:
        self._insert("gap_repairs", [r.row(self.clock_ms(), self._next_version())], _REPAIR_COLUMNS)

    def _write_run(self, run: BackfillRun) -> None:
        self._insert("backfill_runs", [run.row(self._next_version())], _RUN_COLUMNS)

    def _finish(self, run: BackfillRun) -> None:
        self._write_run(run)
        RUNS.labels(run.status).inc()
        logger.info(
            "backfill run finished run=%s key=%s:%s segment=%d status=%s loaded=%d expected=%d attempt=%d",
            run.run_id, run.symbol, run.interval, run.segment_id, run.status, run.loaded_bars,
            run.expected_bars, run.attempts,
        )  # fmt: skip

    def _run_by_id(self, run_id: str) -> BackfillRun | None:
        try:
            with self._ch_lock:
                rows = self.client.query(
                    _RUNS_SELECT + "WHERE run_id = {r:String}",
                    parameters={"r": run_id},
                ).result_rows
        except Exception as exc:
            raise BackfillError(f"reading backfill_runs run {run_id} failed: {exc}") from exc
        if not rows:
            return None
        r = rows[0]
        return BackfillRun(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), int(r[6]), int(r[7]), r[8],
                           int(r[9]), r[10], int(r[11]), _ms(r[12]))  # fmt: skip

    def _finish_by_id(self, run_id: str, status: str, now: int) -> None:
        run = self._run_by_id(run_id)
        if run is not None and run.finished_at is None:
            self._finish(replace(run, status=status, finished_at=now))

    def _stored_times(self, symbol: str, interval: str, lo: int, hi: int) -> set[int]:
        try:
            with self._ch_lock:
                rows = self.client.query(
                    "SELECT DISTINCT toUnixTimestamp64Milli(open_time) FROM ohlcv_candles "
                    "WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
                    "AND open_time >= fromUnixTimestamp64Milli({lo:Int64}) "
                    "AND open_time <= fromUnixTimestamp64Milli({hi:Int64})",
                    parameters={"s": symbol, "i": interval, "lo": lo, "hi": hi},
                ).result_rows
        except Exception as exc:
            raise BackfillError(f"reading stored open times of {symbol}:{interval} failed: {exc}") from exc
        return {int(r[0]) for r in rows}

    def _count_stored(self, symbol: str, interval: str, lo: int, hi: int) -> int:
        try:
            with self._ch_lock:
                row = self.client.query(
                    "SELECT uniqExact(open_time) FROM ohlcv_candles "
                    "WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
                    "AND open_time >= fromUnixTimestamp64Milli({lo:Int64}) "
                    "AND open_time <= fromUnixTimestamp64Milli({hi:Int64})",
                    parameters={"s": symbol, "i": interval, "lo": lo, "hi": hi},
                ).result_rows[0]
        except Exception as exc:
            raise BackfillError(f"counting stored candles of {symbol}:{interval} failed: {exc}") from exc
        return int(row[0])

    # --- Kafka -----------------------------------------------------------------------------

    def _get_producer(self) -> RawProducer:
        from streams.replay import RawProducer

        with self._lock:
            if self._producer is None:
                self._producer = RawProducer(self.broker_address)
            return self._producer
