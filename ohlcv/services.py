"""The long-running services of one process, started and stopped together.

Each service is a thread (API server, sources) or the main-thread loop (topologies). They are
started in dependency order and stopped in reverse; a failure of any one stops the rest.

Layering: ``ohlcv.runtime`` starts the infrastructure and composes these services; a
composition on top (the demo, ``ohlcv.demo``) adds its own through an ``Extension``. Nothing
here imports the runtime or a composition.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ohlcv.infra.broker import EmbeddedBroker, free_port
from ohlcv.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Stack:
    """Handles of a started stack, for the services that need them."""

    settings: Settings
    broker_address: str
    broker: EmbeddedBroker | None
    api_url: str | None = None
    #: set once the run file is published; the API's /healthz says 503 "starting" until then
    ready: threading.Event = field(default_factory=threading.Event)


@dataclass
class Services:
    stack: Stack
    threads: list[threading.Thread] = field(default_factory=list)
    stoppers: list[Callable[[], None]] = field(default_factory=list)
    main_loop: Callable[[threading.Event], None] | None = None
    failed: list[BaseException] = field(default_factory=list)

    def spawn(self, name: str, target: Callable[[], None], stopper: Callable[[], None]) -> None:
        def _run() -> None:
            try:
                target()
            except BaseException as exc:
                logger.exception("service %s failed", name)
                self.failed.append(exc)

        t = threading.Thread(target=_run, name=name, daemon=True)
        t.start()
        self.threads.append(t)
        self.stoppers.append(stopper)

    def run_until(self, stop: threading.Event) -> None:
        if self.main_loop is not None:
            self.main_loop(stop)
        else:
            while not stop.wait(0.5):
                if self.failed:
                    break
        if self.failed:
            raise self.failed[0]

    def stop_all(self) -> None:
        for stopper in reversed(self.stoppers):
            with contextlib.suppress(Exception):
                stopper()
        for t in reversed(self.threads):
            t.join(timeout=10)


def _start_api(services: Services) -> None:
    import uvicorn

    from api.main import create_app, server_config

    settings = services.stack.settings
    port = settings.api_port or free_port()
    app = create_app(settings, broker_address=services.stack.broker_address, ready=services.stack.ready)
    server = uvicorn.Server(server_config(app, settings, port=port))

    def _stop() -> None:
        server.should_exit = True

    services.spawn("api", server.run, _stop)
    services.stack.api_url = f"http://{settings.api_host}:{port}"


def _start_topologies(services: Services) -> None:
    """The candle + resample topologies own the main thread (Quix handles SIGINT/SIGTERM)."""
    from topologies.runner import TopologyConfig, build_application, tune_gc

    settings = services.stack.settings
    app = build_application(TopologyConfig.from_settings(settings, services.stack.broker_address))
    tune_gc()
    if settings.ingestion_enabled:
        from streams.runner import add_live_source

        add_live_source(app, settings)
        logger.info("live ingestion on market=%s symbols=%s intervals=%s",
                    settings.binance_market, settings.symbols, settings.intervals)  # fmt: skip

    def _main_loop(stop: threading.Event) -> None:
        if stop.is_set():
            return
        # Signals stay with run_stack's handler (it sets ``stop``); the watcher turns that into
        # app.stop(), repeated until run() ends. Quix's own handlers would replace ours, and a
        # Ctrl-C landing between their installation and run() marking itself running is lost.
        app._setup_signal_handlers = lambda: None  # type: ignore[method-assign]
        done = threading.Event()
        watcher = threading.Thread(target=_stop_on, args=(stop, done, services, app.stop), daemon=True)
        watcher.start()
        try:
            app.run()
        finally:
            done.set()
            stop.set()

    services.main_loop = _main_loop


def _stop_on(
    stop: threading.Event, done: threading.Event, services: Services, stopper: Callable[[], None]
) -> None:
    """Stop the main loop when asked to, or when a service thread failed.

    A stop that lands before ``app.run()`` has started (a Ctrl-C during start-up) would be
    forgotten by it, so the request is repeated until the loop has really ended."""
    while not stop.wait(0.5):
        if services.failed:
            break
    while not done.is_set():
        stopper()
        done.wait(0.5)


def _start_continuity(services: Services) -> None:
    """The scheduled continuity scan and, when enabled, the gap orchestrator (threads).

    The scan announces the segments it opens on ``ohlcv.gap.queue``, the path ``ohlcv scan
    --queue-missing`` of another process takes too; the orchestrator reads it and the candle
    events (``streams.backfill.triggers``)."""
    from ohlcv.infra.clickhouse import make_client
    from streams.backfill import BackfillConfig, Orchestrator
    from streams.backfill.triggers import GapNotifier
    from streams.continuity import ContinuityScheduler, QueueResult

    settings = services.stack.settings
    streams = [(s, iv) for s in settings.symbols for iv in settings.all_intervals]
    notifier = GapNotifier(services.stack.broker_address)

    def _announce(symbol: str, interval: str, queued: QueueResult) -> None:
        notifier.notify(symbol, interval, queued.segments())

    scheduler = ContinuityScheduler(
        make_client(settings.clickhouse_dsn),
        streams,
        every_s=settings.continuity_scan_interval_s,
        windows_days=settings.continuity_windows_days,
        queue_missing=settings.continuity_queue_missing,
        on_queued=_announce,
    )
    scheduler.start()
    services.threads.append(scheduler)
    services.stoppers.append(scheduler.stop)
    if not settings.backfill_enabled:
        return
    orchestrator = Orchestrator(
        make_client(settings.clickhouse_dsn),
        rest_urls={"spot": settings.binance_spot_rest_url, "usdm": settings.binance_usdm_rest_url},
        broker_address=services.stack.broker_address,
        config=BackfillConfig(
            poll_interval_s=settings.backfill_poll_interval_s,
            concurrency=settings.backfill_concurrency,
            intervals=tuple(settings.intervals),
            default_market=settings.binance_market,
        ),
    )
    orch_stop = threading.Event()

    def _stop_orchestrator() -> None:
        orch_stop.set()

    def _run_orchestrator() -> None:
        try:
            orchestrator.run(orch_stop)
        finally:
            orchestrator.close()

    services.spawn("gap-orchestrator", _run_orchestrator, _stop_orchestrator)


def _start_monitor(services: Services) -> None:
    """The model monitor (``monitoring.loop``), a thread, first round after one interval."""
    settings = services.stack.settings
    if not settings.monitor_enabled:
        return
    from monitoring.loop import MonitorThread, build_monitor

    t = MonitorThread(
        build_monitor(settings, services.stack.broker_address),
        settings.calibration_monitor_interval,
        first_delay_s=settings.calibration_monitor_interval,
    )
    t.start()
    services.threads.append(t)
    services.stoppers.append(t.stop)


def _start_news(services: Services) -> None:
    """The news poller (a thread) when feeds are configured; the news dataframe runs in the
    topologies' Application (``TopologyConfig.news``)."""
    settings = services.stack.settings
    if not settings.news_rss_feeds:
        return
    from news.service import poller_thread

    t = poller_thread(settings, services.stack.broker_address)
    t.start()
    services.threads.append(t)
    services.stoppers.append(t.stop)


@dataclass(frozen=True)
class Extension:
    """More services on top of the stack's: ``prepare`` runs before the stack's services start
    (it may change ``services.stack.settings``), ``start`` after them."""

    prepare: Callable[[Services], None]
    start: Callable[[Services, threading.Event], None]


@contextlib.contextmanager
def start_services(
    stack: Stack, *, stop: threading.Event, extensions: Sequence[Extension] = ()
) -> Iterator[Services]:
    services = Services(stack=stack)
    try:
        for extension in extensions:
            extension.prepare(services)
        _start_api(services)
        _start_topologies(services)
        _start_continuity(services)
        _start_monitor(services)
        _start_news(services)
        for extension in extensions:
            extension.start(services, stop)
        yield services
    finally:
        stop.set()
        services.stop_all()
