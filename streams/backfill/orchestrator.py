"""The gap orchestrator: repairs open gap segments from Binance REST, through Kafka.

The package: ``lifecycle`` (the effective state of a segment, the rows and their queries),
``ledger`` (the orchestrator's writes, one per transition), ``gate`` (the Binance request
gate), ``orchestrator`` (this module: the queue, the attempts, the reconciliation).

Ownership. The candle topology owns ``gap_segments``: it detects segments, shrinks and splits
them as late candles arrive and marks them ``repaired`` (emitting ``gap_repaired``). The
orchestrator never writes there. Its own lifecycle of a segment lives in ``gap_repairs`` (same
key, ReplacingMergeTree(version)); ``segment_lifecycle`` joins both into the effective state:
``repaired`` when gap_segments says so, else the gap_repairs state when there is one, else the
gap_segments state (``open``). Every attempt is one row of ``backfill_runs``
(pending -> running -> success | partial | error).

What starts work. ``run(stop_event)`` reads ``ohlcv.candle.events`` and ``ohlcv.gap.queue``
(``triggers``): a ``gap_detected`` event is fetched at once from the event alone (its segment row
reaches ClickHouse only at the topology's next checkpoint), a ``gap_repaired`` one closes its
attempt, and a scan's notice of segments it opened is taken at once (the running topology never
hears of those: it seeds its open segments from ClickHouse at a stream's first record only).
Each wakes one pass (``run_once``); so does a finished attempt, and, while attempts wait for the
topology, every ``check_interval_s``. The ClickHouse queue (``gap_segments`` joined with
``gap_repairs``) stays the record and the slow path: every pass reads it, and with no trigger a
pass runs every ``poll_interval_s`` (default 30 s), which repairs what no trigger announced
(segments detected while the orchestrator was down, retries after a back-off, triggers lost).

One pass (``run_once``):

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

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from clickhouse_connect.driver.client import Client
from prometheus_client import Counter, Gauge, Histogram

from ohlcv.errors import ClickHouseUnavailableError
from schemas.intervals import interval_ms
from schemas.topics import CANDLE_EVENTS, GAP_QUEUE, RAW_KLINES
from streams.backfill.gate import BackfillStoppedError, GatedTransport, RestGate
from streams.backfill.ledger import Ledger
from streams.backfill.lifecycle import BackfillError, BackfillRun, Key, RepairRow, SegmentLifecycle
from streams.backfill.triggers import Trigger, TriggerConsumer
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
DISPATCHES = Counter(
    "ohlcv_backfill_dispatches_total",
    "Repair attempts started, by what announced the segment (gap_detected, scan or poll)",
    ["trigger"],
)
RETRIES = Counter("ohlcv_backfill_retries_total", "Repair attempts of segments whose previous attempt failed")


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class BackfillConfig:
    """How the orchestrator works; see the module docstring. Durations in seconds."""

    #: the ClickHouse queue is read at least this often (triggers wake the orchestrator sooner)
    poll_interval_s: float = 30.0
    #: how often attempts that wait for the topology are checked
    check_interval_s: float = 1.0
    #: read by ``run`` for triggers; None: the ClickHouse poll only
    events_topic: str | None = CANDLE_EVENTS.name
    queue_topic: str = GAP_QUEUE.name
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
        for name in ("poll_interval_s", "check_interval_s", "backoff_initial_s", "backoff_max_s",
                     "landing_timeout_s"):  # fmt: skip
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
    #: the segment's gap_repairs row as the attempt wrote it
    repair: RepairRow
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
                transport=GatedTransport(self.gates[m]),
                sleep=self.gates[m].pause,
                **dict(rest_options or {}),
            )
            for m, url in rest_urls.items()
        }
        self._producer: RawProducer | None = None
        self._pool = ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="backfill")
        self.ledger = Ledger(client, clock_ms)
        self._lock = threading.Lock()
        self._in_flight: dict[Key, Future[None]] = {}
        self._pending: dict[Key, _Pending] = {}
        self._seen_open: set[Key] = set()
        #: segments announced by a trigger, until dispatched or seen in ClickHouse
        self._hints: dict[Key, Trigger] = {}
        #: gap_repaired events not applied yet
        self._repaired: dict[Key, Trigger] = {}
        #: what announced each dispatched segment (gap_detected, scan, poll), newest attempt
        self.dispatched_by: dict[Key, str] = {}
        self._wake = threading.Event()
        #: the trigger consumer while ``run`` runs
        self.consumer: TriggerConsumer | None = None
        self._next_due_ms: int | None = None
        self._started_ms = clock_ms()
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------------

    def run(self, stop_event: threading.Event) -> None:
        """Passes on triggers, finished attempts and timers (see the module docstring) until
        ``stop_event`` is set, then close."""
        cfg = self.config
        logger.info(
            "backfill orchestrator started poll_s=%.2f concurrency=%d markets=%s triggers=%s",
            cfg.poll_interval_s, cfg.concurrency, sorted(self.rest), cfg.events_topic or "off",
        )  # fmt: skip
        consumer = None
        if cfg.events_topic is not None:
            consumer = TriggerConsumer(self.broker_address, self.trigger, events_topic=cfg.events_topic,
                                       queue_topic=cfg.queue_topic, on_ready=self._wake.set)  # fmt: skip
            self.consumer = consumer
            consumer.start()
        # the first repair should not wait for the producer's connection; nor should the passes
        threading.Thread(target=self._connect_producer, name="backfill-producer", daemon=True).start()
        try:
            while not stop_event.is_set():
                self._wake.clear()
                try:
                    self.run_once(wait=False)
                except (BackfillError, ClickHouseUnavailableError) as exc:
                    logger.warning("backfill pass failed, retrying in %.2fs: %s", cfg.check_interval_s, exc)
                    self._wait(stop_event, cfg.check_interval_s)
                    continue
                self._wait(stop_event, self._idle_s())
        finally:
            if consumer is not None:
                consumer.stop(timeout_s=2.0)  # a daemon thread: a broker that does not answer holds nothing
            self.close()

    def trigger(self, triggers: list[Trigger]) -> None:
        """Segments announced by events or a scan (any thread): the next pass starts at once."""
        cfg = self.config
        with self._lock:
            for t in triggers:
                if t.interval not in cfg.intervals or (
                    cfg.symbols is not None and t.symbol not in cfg.symbols
                ):
                    continue
                if t.kind == "gap_repaired":
                    self._hints.pop(t.key, None)
                    self._repaired[t.key] = t
                else:
                    self._hints[t.key] = t
        self._wake.set()

    def _idle_s(self) -> float:
        """How long a pass may wait for a trigger: attempts waiting for the topology are checked
        every ``check_interval_s``, a back-off ends on time, the queue is read every poll."""
        with self._lock:
            checking = bool(self._pending or self._in_flight or self._repaired)
            due = self._next_due_ms
        idle = self.config.check_interval_s if checking else self.config.poll_interval_s
        if due is not None:
            idle = min(idle, max(0.0, (due - self.clock_ms()) / 1000))
        return idle

    def _wait(self, stop_event: threading.Event, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not stop_event.is_set() and not self._wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(min(left, 0.25))

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
        reconciled = self._apply_repaired()
        rows = self._load()
        reconciled += self._reconcile(rows, now)
        if reconciled:
            rows = self._load()
        with self._lock:
            hints = dict(self._hints)
        stored = {s.key for s in rows}
        fresh = {k: t for k, t in hints.items() if k not in stored}
        if fresh:
            # held in a state that needs no work (exchange_gap, repaired, given up: a re-detection
            # after a replay) is not attempted again; not held yet, the trigger is the segment's row
            done = self.ledger.lifecycles(sorted({k[0] for k in fresh}), sorted({k[1] for k in fresh}))
            stored |= {s.key for s in done}
        rows += [_announced(t) for k, t in fresh.items() if k not in stored]
        due, waiting = self._queue(rows, now)
        with self._lock:
            free = len(due) if wait else max(0, self.config.concurrency - len(self._in_flight))
        take = due[:free]
        futures = [self._dispatch(s, hints[s.key].kind if s.key in hints else "poll") for s in take]
        with self._lock:
            for key in stored | {s.key for s in take}:
                if self._hints.get(key) is hints.get(key):
                    self._hints.pop(key, None)
        queue_size = len(due) - len(take) + waiting
        QUEUE_SIZE.set(queue_size)
        if wait and futures:
            wait_futures(futures)
        return PollResult(dispatched=tuple(s.key for s in take), reconciled=reconciled, queue_size=queue_size)

    def _load(self) -> list[SegmentLifecycle]:
        return self.ledger.work(self.config.symbols, self.config.intervals)

    def _queue(self, rows: list[SegmentLifecycle], now: int) -> tuple[list[SegmentLifecycle], int]:
        """Due segments by priority, and how many wait for a later attempt."""
        with self._lock:
            busy = set(self._in_flight) | set(self._pending)
            ranges = [(p.run.symbol, p.run.interval, p.run.from_open_time, p.run.to_open_time)
                      for p in self._pending.values()]  # fmt: skip
        due: list[SegmentLifecycle] = []
        waiting = 0
        next_due: int | None = None
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
                next_due = s.next_attempt_at if next_due is None else min(next_due, s.next_attempt_at)
                continue
            due.append(s)
        due.sort(key=lambda s: (-s.missing_bars, s.detected_at, s.symbol, s.interval, s.segment_id))
        with self._lock:
            self._next_due_ms = next_due
        return due, waiting

    def _dispatch(self, s: SegmentLifecycle, trigger: str) -> Future[None]:
        step = interval_ms(s.interval)
        run = BackfillRun(
            run_id=uuid.uuid4().hex, symbol=s.symbol, interval=s.interval, segment_id=s.segment_id,
            from_open_time=s.from_open_time, to_open_time=s.to_open_time,
            expected_bars=(s.to_open_time - s.from_open_time) // step + 1, loaded_bars=0, status="pending",
            attempts=s.attempts + 1, last_error="", started_at=self.clock_ms(), finished_at=None,
        )  # fmt: skip
        self.ledger.write_run(run)
        DISPATCHES.labels(trigger).inc()
        logger.info("backfill dispatch key=%s:%s segment=%d bars=%d trigger=%s",
                    s.symbol, s.interval, s.segment_id, run.expected_bars, trigger)  # fmt: skip
        with self._lock:
            self.dispatched_by[s.key] = trigger
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
            self._wake.set()  # the next pass: a free worker, an attempt to check

    def _attempt(self, s: SegmentLifecycle, run: BackfillRun) -> None:
        cfg = self.config
        now = self.clock_ms()
        market = cfg.market_of(s.symbol)
        if s.state == "failed":
            RETRIES.inc()
        run = replace(run, status="running", started_at=now)
        repair = replace(RepairRow.of(s), state="repairing", attempts=run.attempts, last_attempt_at=now,
                         next_attempt_at=None, run_id=run.run_id)  # fmt: skip
        self.ledger.write_repair(repair)
        self.ledger.write_run(run)
        from streams.replay import ReplayError, replay_to_kafka

        rest_bars = produced = 0
        produced_times: set[int] = set()
        try:
            rest = self.rest.get(market)
            if rest is None:
                raise BinanceRestError(f"no REST URL for market {market!r} (symbol {s.symbol})")
            stored = self.ledger.stored_times(s.symbol, s.interval, run.from_open_time, run.to_open_time)
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
            self.ledger.write_repair(RepairRow.of(s))
            self.ledger.finish(run, status="error", last_error="orchestrator stopped during the attempt",
                               loaded_bars=produced)  # fmt: skip
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
            self._empty_answer(repair)
            self.ledger.finish(run, status="partial", loaded_bars=0)
            return
        run = replace(run, loaded_bars=produced)
        with self._lock:
            self._pending[s.key] = _Pending(
                run=run,
                repair=repair,
                market=market,
                target=len(stored | produced_times),
                produced=produced,
                started=time.monotonic(),
            )
        self.ledger.write_repair(repair)
        self.ledger.write_run(run)
        logger.info(
            "backfill produced key=%s:%s segment=%d from=%d to=%d rest_bars=%d produced=%d attempt=%d",
            s.symbol, s.interval, s.segment_id, run.from_open_time, run.to_open_time, rest_bars, produced,
            run.attempts,
        )  # fmt: skip

    def _empty_answer(self, repair: RepairRow) -> None:
        cfg = self.config
        self.ledger.empty_answer(repair, confirmations=cfg.empty_confirmations, recheck_s=cfg.empty_recheck_s)

    def _fail(self, repair: RepairRow, run: BackfillRun, error: str, next_at: int, produced: int) -> None:
        self.ledger.failed(repair, run, error, next_at, produced, max_attempts=self.config.max_attempts)

    # --- reconcile (the pass) --------------------------------------------------------------

    def _apply_repaired(self) -> int:
        """Close the attempts whose segment a ``gap_repaired`` event reported (before ClickHouse
        shows it); one whose worker still runs is closed at a later pass."""
        with self._lock:
            events = list(self._repaired.values())
        written = 0
        for t in events:
            with self._lock:
                if t.key in self._in_flight:
                    continue
                del self._repaired[t.key]
                pending = self._pending.pop(t.key, None)
            if pending is None:
                continue  # not an attempt of ours that waits: the queue's rows will tell
            MTTR.observe(max(0, (t.repaired_at or t.detected_at) - t.detected_at) / 1000)
            self._seen_open.discard(t.key)
            self.ledger.repaired(pending.repair, pending.run)
            written += 1
        return written

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
                self.ledger.repaired(RepairRow.of(s), pending.run if pending is not None else None)
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
                    run = self.ledger.run(s.run_id) if s.run_id else None
                    error = f"attempt {s.run_id or '?'} of an earlier orchestrator did not finish"
                    if run is not None:
                        self._fail(RepairRow.of(s), run, error, now, run.loaded_bars)
                    else:
                        self.ledger.write_repair(replace(RepairRow.of(s), state="failed", last_error=error,
                                                         next_attempt_at=now))  # fmt: skip
                    written += 1
                continue
            run = p.run
            present = len(
                self.ledger.stored_times(s.symbol, s.interval, run.from_open_time, run.to_open_time)
            )
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
                        RepairRow.of(s), run, error, now + int(cfg.backoff_s(run.attempts) * 1000), p.produced
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
                self.ledger.repaired(RepairRow.of(s), run)
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
                    base = RepairRow.of(other)
                    if other.key != key:
                        base = replace(base, attempts=max(base.attempts, run.attempts), run_id=run.run_id,
                                       last_attempt_at=run.started_at, empty_answers=0)  # fmt: skip
                    self._empty_answer(replace(base, rest_bars=0))
            self.ledger.finish(run, status="partial")
        return written

    # --- Kafka -----------------------------------------------------------------------------

    def _connect_producer(self) -> None:
        from streams.replay import ReplayError

        try:
            self._get_producer().connect(self.config.raw_topic)
        except ReplayError as exc:
            logger.warning("backfill producer not connected yet (the first attempt will retry): %s", exc)

    def _get_producer(self) -> RawProducer:
        from streams.replay import RawProducer

        with self._lock:
            if self._producer is None:
                self._producer = RawProducer(self.broker_address)
            return self._producer


def _announced(t: Trigger) -> SegmentLifecycle:
    """A segment as its trigger announced it, for the queue while ClickHouse does not hold it."""
    return SegmentLifecycle(
        symbol=t.symbol, interval=t.interval, segment_id=t.segment_id, segment_end=t.to_open_time,
        from_open_time=t.from_open_time, to_open_time=t.to_open_time, missing_bars=t.missing_bars,
        state="open", topology_state="open", repair_state="", detected_at=t.detected_at, repaired_at=None,
        attempts=0, empty_answers=0, rest_bars=0, last_attempt_at=None, next_attempt_at=None, last_error="",
        run_id="", updated_at=t.detected_at,
    )  # fmt: skip
