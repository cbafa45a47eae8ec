"""Production entrypoints: ``ohlcv init`` and ``ohlcv run api|candles|features|ingest``.

Each docker-compose service runs one of these in the foreground against a Kafka cluster
(KAFKA_BROKER_ADDRESS) and a ClickHouse server (CLICKHOUSE_URL). None of them starts embedded
infrastructure: with KAFKA_BROKER_ADDRESS empty they refuse with one line, because the embedded
broker is memory-only and belongs to ``ohlcv up``/``ohlcv demo``.

``run candles`` and ``run ingest`` serve the process's Prometheus ``/metrics`` on METRICS_PORT
(default 9100, 0 turns it off) and then hand over to ``topologies.runner.main(settings)`` and
``streams.runner.main(settings)``; those runners must not start a metrics server of their own.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from ohlcv.errors import ConfigError, OhlcvError
from ohlcv.settings import Settings, load_settings

logger = logging.getLogger(__name__)

run_app = typer.Typer(
    no_args_is_help=True,
    help="Run one production service in the foreground (one per container, see docker-compose.yml).",
)

MetricsPort = Annotated[
    int,
    typer.Option(
        "--metrics-port",
        envvar="METRICS_PORT",
        min=0,
        max=65535,
        help="port of this process's Prometheus /metrics; 0 serves none",
    ),
]


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def production_settings(command: str) -> Settings:
    """Settings for a production service; ConfigError unless a Kafka cluster is configured."""
    settings = load_settings()
    if not settings.kafka_broker_address:
        raise ConfigError(
            f"KAFKA_BROKER_ADDRESS is empty: `ohlcv {command}` runs against a Kafka cluster "
            "(e.g. KAFKA_BROKER_ADDRESS=kafka:9092); `ohlcv up` runs the embedded stack"
        )
    return settings


def init_command() -> None:
    """Apply ClickHouse migrations and create missing topics, then exit (the compose `init` service)."""
    from ohlcv.infra.broker import wait_for_broker
    from ohlcv.infra.clickhouse import make_client, migrate
    from ohlcv.infra.kafka import ensure_topics

    settings = production_settings("init")
    client = make_client(settings.clickhouse_dsn)
    try:
        applied = migrate(client)
    finally:
        client.close()
    for name in applied:
        typer.echo(f"applied  {name}")
    if not applied:
        typer.echo("migrations up to date")
    wait_for_broker(settings.kafka_broker_address, timeout_s=30.0)
    result = ensure_topics(settings.kafka_broker_address)
    for name in result.created:
        typer.echo(f"created  {name}")
    for name in result.existing:
        typer.echo(f"exists   {name}")


@run_app.command("api")
def run_api() -> None:
    """Serve the REST/WebSocket API (and its /metrics) on API_HOST:API_PORT."""
    import uvicorn

    from api.main import create_app, server_config

    settings = production_settings("run api")
    _setup_logging()
    app = create_app(settings, broker_address=settings.kafka_broker_address)
    uvicorn.Server(server_config(app, settings, log_level="info")).run()


@run_app.command("candles")
def run_candles(metrics_port: MetricsPort = 9100) -> None:
    """Run the candle topologies: raw klines in, candle events and ClickHouse rows out."""
    settings = production_settings("run candles")
    _setup_logging()
    _serve_metrics(metrics_port)
    service_main("topologies.runner", "the candles service")(settings)


@run_app.command("features")
def run_features(metrics_port: MetricsPort = 9100) -> None:
    """Run the features topology: candle events in, feature rows out (ohlcv.features, ClickHouse)."""
    settings = production_settings("run features")
    _setup_logging()
    _serve_metrics(metrics_port)
    from topologies.runner import features_main

    features_main(settings)


@run_app.command("scoring")
def run_scoring(metrics_port: MetricsPort = 9100) -> None:
    """Run the scoring topology: feature rows in, scores out (ohlcv.scores, model_inference_log)."""
    settings = production_settings("run scoring")
    _setup_logging()
    _serve_metrics(metrics_port)
    from topologies.runner import scoring_main

    scoring_main(settings)


@run_app.command("monitor")
def run_monitor(metrics_port: MetricsPort = 9100) -> None:
    """Run the model monitor: realized outcomes, live calibration, drift, Evidently reports and
    auto-retrain, every CALIBRATION_MONITOR_INTERVAL seconds."""
    settings = production_settings("run monitor")
    _setup_logging()
    _serve_metrics(metrics_port)
    from monitoring.loop import main

    main(settings)


@run_app.command("news")
def run_news(metrics_port: MetricsPort = 9100) -> None:
    """Run the news poller (NEWS_RSS_FEEDS every NEWS_POLL_INTERVAL s, onto news.raw) and the
    news topology (dedup, sentiment, news_articles, news.articles)."""
    settings = production_settings("run news")
    if not settings.news_rss_feeds:
        raise OhlcvError("NEWS_RSS_FEEDS is empty: give the feeds to poll (name=url, comma-separated)")
    _setup_logging()
    _serve_metrics(metrics_port)
    from news.service import poller_thread
    from topologies.runner import news_main

    poller = poller_thread(settings, settings.kafka_broker_address)
    poller.start()
    try:
        news_main(settings)
    finally:
        poller.stop()


@run_app.command("risk")
def run_risk(metrics_port: MetricsPort = 9100) -> None:
    """Run the risk topology: one simulated book per stream on ohlcv.scores (risk.events, risk_*)."""
    settings = production_settings("run risk")
    _setup_logging()
    _serve_metrics(metrics_port)
    from topologies.runner import risk_main

    risk_main(settings)


@run_app.command("ingest")
def run_ingest(metrics_port: MetricsPort = 9100) -> None:
    """Run the Binance sources (websocket, REST repair) that produce raw klines."""
    settings = production_settings("run ingest")
    _setup_logging()
    _serve_metrics(metrics_port)
    service_main("streams.runner", "the ingest service")(settings)


def service_main(module: str, what: str) -> Callable[[Settings], None]:
    """``module.main``, imported only when the service runs; OhlcvError while it is not built yet."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # the runner exists but one of its own imports is missing
            raise
        raise OhlcvError(f"{what} is not built yet: module {module} does not exist") from exc
    main = getattr(mod, "main", None)
    if not callable(main):
        raise OhlcvError(f"{what} is not built yet: {module} has no main(settings)")
    return main  # type: ignore[no-any-return]


def _serve_metrics(port: int) -> None:
    if port == 0:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(port)
    except OSError as exc:
        raise ConfigError(f"METRICS_PORT={port}: cannot listen for /metrics: {exc}") from exc
    logger.info("metrics serving port=%d path=/metrics", port)
