"""``ohlcv run ingest``: the Binance kline websocket source in its own Application.

In embedded mode (``ohlcv up`` with INGESTION_ENABLED=true) the same source is added to the
topology's Application instead (``add_live_source``), since everything runs in one process.
"""

from __future__ import annotations

from quixstreams import Application

from ohlcv.infra.broker import EMBEDDED_CONSUMER_CONFIG
from ohlcv.settings import Settings
from streams.binance_ws import PRODUCER_EXTRA_CONFIG, BinanceKlineSource


def live_source(settings: Settings) -> BinanceKlineSource:
    """The websocket source for every configured symbol x ingested interval."""
    base = settings.binance_spot_ws_url if settings.binance_market == "spot" else settings.binance_usdm_ws_url
    return BinanceKlineSource(
        f"binance-ws-{settings.binance_market}",
        base_url=base,
        market=settings.binance_market,
        streams=[(s, iv) for s in settings.symbols for iv in settings.intervals],
    )


def add_live_source(app: Application, settings: Settings) -> BinanceKlineSource:
    source = live_source(settings)
    source.add_to(app)
    return source


def main(settings: Settings) -> None:
    app = Application(
        broker_address=settings.kafka_broker_address,
        consumer_group=f"{settings.kafka_consumer_group}-ingest",
        producer_extra_config=PRODUCER_EXTRA_CONFIG,
        consumer_extra_config=dict(EMBEDDED_CONSUMER_CONFIG) if settings.embedded_broker else {},
        use_changelog_topics=not settings.embedded_broker,
        state_dir=str(settings.state_dir / "ingest"),
        loglevel="WARNING",
    )
    add_live_source(app, settings)
    app.run()
