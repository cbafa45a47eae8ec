"""Runs the candle and resample topologies in one Quix Streams Application, and the features
topology in it (``ohlcv up``) or in an Application of its own (``ohlcv run features``).

The runner is the only place that creates the Application, topics and sinks. Broker quirks of
the embedded (Tansu) broker are applied here from ``ohlcv.infra.broker``: no changelog topics,
a 6 s session timeout, at-least-once.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.models import Topic, TopicConfig

from ohlcv.infra.broker import EMBEDDED_CONSUMER_CONFIG
from ohlcv.infra.clickhouse import make_client
from ohlcv.settings import Settings
from registry.loader import ProductionModels
from registry.store import Registry
from risk.store import default_limits
from schemas.risk import RiskLimits
from schemas.topics import (
    CANDLE_EVENTS,
    DEAD_LETTER,
    FEATURES,
    NEWS_ARTICLES,
    NEWS_RAW,
    RAW_KLINES,
    RISK_EVENTS,
    SCORES,
    TopicSpec,
)  # fmt: skip
from sinks.clickhouse import ClickHouseCandleSink
from sinks.features import ClickHouseFeatureSink
from sinks.news import ClickHouseNewsSink
from sinks.scores import ClickHouseFeatureScoreSink, ClickHouseScoreSink
from topologies.candle_logic import CandleStateMachine
from topologies.candles import build_candles
from topologies.feature_logic import FeatureStream
from topologies.features import build_features
from topologies.news_features import NewsBook, NewsFeatureConfig, NewsTail
from topologies.resample import Resampler
from topologies.scoring import build_scoring
from topologies.scoring import score_inline as inline_scoring  # the name of add_features' flag
from topologies.seed import ClickHouseLookup, FeatureHistory

logger = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class TopologyConfig:
    broker_address: str
    clickhouse_url: str
    clickhouse_database: str | None = None
    consumer_group: str = "ohlcv-candles"
    state_dir: Path = Path(".data/state")
    embedded_broker: bool = True
    processing_guarantee: str = "at-least-once"
    resample_intervals: tuple[str, ...] = ("5m", "15m", "1h", "4h", "1d")
    raw_topic: str = RAW_KLINES.name
    events_topic: str = CANDLE_EVENTS.name
    deadletter_topic: str = DEAD_LETTER.name
    commit_interval_s: float = 1.0
    #: how long an idle poll waits: a due checkpoint (the ClickHouse write) waits for it, so a
    #: stream that goes quiet is stored within commit_interval_s + poll_timeout_s
    poll_timeout_s: float = 0.1
    auto_offset_reset: str = "earliest"
    #: also run the features topology in this Application (one process: ``ohlcv up``, where
    #: chDB allows one process per data path); production runs it apart (``ohlcv run features``)
    features: bool = False
    features_topic: str = FEATURES.name
    #: also run the scoring topology (``ohlcv up``); production: ``ohlcv run scoring``
    scoring: bool = False
    scores_topic: str = SCORES.name
    inference_prob_threshold: float = 0.5
    #: how often a scorer reads which model is production (a promotion reaches it this fast)
    model_poll_s: float = 5.0
    #: also run the news topology (``ohlcv up`` with NEWS_RSS_FEEDS); production: ``ohlcv run news``
    news: bool = False
    news_raw_topic: str = NEWS_RAW.name
    news_articles_topic: str = NEWS_ARTICLES.name
    symbols: tuple[str, ...] = ()
    #: feature rows read news.articles for their news columns (with NEWS_RSS_FEEDS set); off:
    #: the columns say "no news, stalled"
    news_features: bool = False
    news_feature: NewsFeatureConfig = field(default_factory=NewsFeatureConfig)
    #: also run the risk topology (``ohlcv up``); production: ``ohlcv run risk``
    risk: bool = False
    risk_events_topic: str = RISK_EVENTS.name
    risk_limits: RiskLimits = field(default_factory=RiskLimits)
    risk_initial_equity: float = 10_000.0
    risk_limits_poll_s: float = 5.0
    risk_metrics_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings, broker_address: str) -> TopologyConfig:
        return cls(
            broker_address=broker_address,
            clickhouse_url=settings.clickhouse_dsn,
            consumer_group=settings.kafka_consumer_group,
            state_dir=settings.state_dir,
            embedded_broker=settings.embedded_broker,
            processing_guarantee=settings.processing_guarantee,
            resample_intervals=tuple(settings.resample_intervals),
            features=settings.features_enabled,
            scoring=settings.scoring_enabled,
            inference_prob_threshold=settings.inference_prob_threshold,
            model_poll_s=settings.model_poll_interval,
            news=bool(settings.news_rss_feeds),
            symbols=tuple(settings.symbols),
            news_features=bool(settings.news_rss_feeds),
            news_feature=NewsFeatureConfig.from_settings(settings),
            risk=settings.risk_enabled and settings.scoring_enabled,
            risk_limits=default_limits(settings),
            risk_initial_equity=settings.risk_initial_equity,
            risk_limits_poll_s=settings.risk_limits_poll_interval,
            risk_metrics_s=settings.risk_metrics_interval,
        )


def _topic_config(spec: TopicSpec) -> TopicConfig:
    return TopicConfig(num_partitions=spec.partitions, replication_factor=1, extra_config=spec.config())


def tune_gc() -> None:
    """Garbage collection for a throughput process: everything loaded so far (modules, clients)
    leaves the collector's view (``gc.freeze``), and a young generation of 50k objects instead
    of 700 stops the cyclic collector from rescanning a batch's short-lived dicts many times
    over (measured: the topology's Python path per kline halves). Reference counting still
    frees nearly everything; only cycles wait longer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def make_application(cfg: TopologyConfig) -> Application:
    """An Application with the broker quirks and the checkpoint settings of ``cfg``."""
    consumer_extra: dict[str, Any] = dict(EMBEDDED_CONSUMER_CONFIG) if cfg.embedded_broker else {}
    return Application(
        broker_address=cfg.broker_address,
        consumer_group=cfg.consumer_group,
        auto_offset_reset=cfg.auto_offset_reset,  # type: ignore[arg-type]
        commit_interval=cfg.commit_interval_s,
        consumer_poll_timeout=cfg.poll_timeout_s,
        state_dir=str(cfg.state_dir),
        use_changelog_topics=not cfg.embedded_broker,
        processing_guarantee=cfg.processing_guarantee,  # type: ignore[arg-type]
        consumer_extra_config=consumer_extra,
        # linger 1 ms: an event waits at most that long for company. Measured (make bench): 5 ms
        # added ~5 ms to kline -> WebSocket latency; 0 cost a quarter of the single-record rate
        producer_extra_config={"enable.idempotence": True, "linger.ms": 1},
        loglevel="WARNING",
    )


def events_topic(app: Application, cfg: TopologyConfig) -> Topic:
    return app.topic(
        cfg.events_topic, key_deserializer="str", value_deserializer="json",
        key_serializer="str", value_serializer="json", config=_topic_config(CANDLE_EVENTS),
    )  # fmt: skip


def add_features(app: Application, cfg: TopologyConfig, events: Topic, *, score_inline: bool = False) -> None:
    """The features dataframe on the candle events topic (``topologies.features``); with
    ``score_inline``, the scoring of its rows too (``topologies.scoring.score_inline``: the
    stages in one Application, ``ohlcv up``)."""
    features = app.topic(
        cfg.features_topic, key_serializer="str", value_serializer="bytes", config=_topic_config(FEATURES)
    )
    history = FeatureHistory(make_client(cfg.clickhouse_url, cfg.clickhouse_database))
    book = NewsBook(cfg.news_feature)
    if cfg.news_features:
        book.seed(make_client(cfg.clickhouse_url, cfg.clickhouse_database))
        consumer: dict[str, Any] = dict(EMBEDDED_CONSUMER_CONFIG) if cfg.embedded_broker else {}
        NewsTail(book, cfg.broker_address, cfg.news_articles_topic, consumer).start()
    sink = (ClickHouseFeatureScoreSink if score_inline else ClickHouseFeatureSink)(
        cfg.clickhouse_url, cfg.clickhouse_database
    )
    then = None
    if score_inline:
        then = partial(inline_scoring, models=production_models(cfg), threshold=cfg.inference_prob_threshold,
                       scores_topic=scores_topic(app, cfg))  # fmt: skip
    build_features(app.dataframe(events), stream=FeatureStream(), history=history,
                   features_topic=features, sink=sink, news=book, then=then)  # fmt: skip


def scores_topic(app: Application, cfg: TopologyConfig) -> Topic:
    return app.topic(
        cfg.scores_topic, key_serializer="str", value_serializer="bytes", config=_topic_config(SCORES)
    )


def production_models(cfg: TopologyConfig) -> ProductionModels:
    registry = Registry(make_client(cfg.clickhouse_url, cfg.clickhouse_database))
    return ProductionModels(registry, cfg.model_poll_s)


def add_scoring(app: Application, cfg: TopologyConfig) -> None:
    """The scoring dataframe on the features topic (``topologies.scoring``)."""
    features = app.topic(cfg.features_topic, key_deserializer="str", value_deserializer="json",
                         config=_topic_config(FEATURES))  # fmt: skip
    sink = ClickHouseScoreSink(cfg.clickhouse_url, cfg.clickhouse_database)
    build_scoring(app.dataframe(features), models=production_models(cfg),
                  threshold=cfg.inference_prob_threshold, scores_topic=scores_topic(app, cfg),
                  sink=sink)  # fmt: skip


def add_risk(app: Application, cfg: TopologyConfig) -> None:
    """The risk dataframe on the scores topic (``topologies.risk``)."""
    from risk.metrics import BookGauges
    from risk.store import LimitsSource, stored_book, stored_books
    from sinks.risk import ClickHouseRiskSink
    from topologies.risk import build_risk

    scores = app.topic(cfg.scores_topic, key_deserializer="str", value_deserializer="json",
                       config=_topic_config(SCORES))  # fmt: skip
    events = app.topic(cfg.risk_events_topic, key_serializer="str", value_serializer="bytes",
                       config=_topic_config(RISK_EVENTS))  # fmt: skip
    client = make_client(cfg.clickhouse_url, cfg.clickhouse_database)
    seed_client = make_client(cfg.clickhouse_url, cfg.clickhouse_database)
    gauges = BookGauges(cfg.risk_metrics_s)
    gauges.start()
    build_risk(
        app.dataframe(scores), limits=LimitsSource(client, cfg.risk_limits, cfg.risk_limits_poll_s),
        seed=lambda s, i: stored_book(seed_client, s, i), seed_account=lambda: stored_books(seed_client),
        initial_equity=cfg.risk_initial_equity,
        events_topic=events, sink=ClickHouseRiskSink(cfg.clickhouse_url, cfg.clickhouse_database),
        on_book=gauges.update,
    )  # fmt: skip


def add_news(app: Application, cfg: TopologyConfig) -> None:
    """The news dataframe on ``news.raw`` (``topologies.news``), its dedup memory seeded from
    the stored articles of the last 30 days."""
    from topologies.news import build_news
    from topologies.news_logic import NewsDedup, Sentiment, asset_patterns

    raw = app.topic(cfg.news_raw_topic, key_deserializer="str", value_deserializer="json",
                    config=_topic_config(NEWS_RAW))  # fmt: skip
    articles = app.topic(cfg.news_articles_topic, key_serializer="bytes", value_serializer="bytes",
                         config=_topic_config(NEWS_ARTICLES))  # fmt: skip
    dedup = NewsDedup()
    dedup.seed(
        make_client(cfg.clickhouse_url, cfg.clickhouse_database)
        .query(
            "SELECT link_key, title_key, source, poll_id, entry_key FROM news_articles FINAL "
            "WHERE fetched_at > now() - INTERVAL 30 DAY ORDER BY fetched_at"
        )
        .result_rows
    )
    sink = ClickHouseNewsSink(cfg.clickhouse_url, cfg.clickhouse_database)
    build_news(app.dataframe(raw), dedup=dedup, sentiment=Sentiment(), assets=asset_patterns(cfg.symbols),
               articles_topic=articles, sink=sink)  # fmt: skip


def build_news_application(cfg: TopologyConfig) -> Application:
    """The news topology alone (``ohlcv run news``), in its own consumer group."""
    app = make_application(cfg)
    add_news(app, cfg)
    return app


def build_application(cfg: TopologyConfig) -> Application:
    """The Application with the candle dataframe wired (resampler when configured; the
    features dataframe too with ``cfg.features``).

    The processes that run it call ``tune_gc`` once, after building it."""
    app = make_application(cfg)
    raw = app.topic(
        cfg.raw_topic, key_deserializer="str", value_deserializer="bytes",
        key_serializer="str", value_serializer="json", config=_topic_config(RAW_KLINES),
    )  # fmt: skip
    events = events_topic(app, cfg)
    dead = app.topic(
        cfg.deadletter_topic, key_serializer="str", value_serializer="json", config=_topic_config(DEAD_LETTER)
    )
    client = make_client(cfg.clickhouse_url, cfg.clickhouse_database)
    lookup = ClickHouseLookup(client)
    machine = CandleStateMachine(lookup, now_ms)
    sink = ClickHouseCandleSink(cfg.clickhouse_url, cfg.clickhouse_database)
    resampler = Resampler(list(cfg.resample_intervals), lookup, now_ms) if cfg.resample_intervals else None
    build_candles(
        app.dataframe(raw), machine=machine, events_topic=events, deadletter_topic=dead, sink=sink,
        resampler=resampler, raw_topic=raw,
    )  # fmt: skip
    if cfg.features:
        # with the scoring stage in the same Application, the rows are scored inline
        add_features(app, cfg, events, score_inline=cfg.scoring)
    elif cfg.scoring:
        add_scoring(app, cfg)
    if cfg.risk:
        add_risk(app, cfg)
    if cfg.news:
        add_news(app, cfg)
    return app


def build_features_application(cfg: TopologyConfig, *, score_inline: bool = False) -> Application:
    """The features topology alone (``ohlcv run features``), in its own consumer group; with
    ``score_inline``, scoring its rows too."""
    app = make_application(cfg)
    add_features(app, cfg, events_topic(app, cfg), score_inline=score_inline)
    return app


def build_scoring_application(cfg: TopologyConfig) -> Application:
    """The scoring topology alone (``ohlcv run scoring``), in its own consumer group."""
    app = make_application(cfg)
    add_scoring(app, cfg)
    return app


def build_risk_application(cfg: TopologyConfig) -> Application:
    """The risk topology alone (``ohlcv run risk``), in its own consumer group."""
    app = make_application(cfg)
    add_risk(app, cfg)
    return app


def risk_main(settings: Settings, broker_address: str | None = None) -> None:
    """``ohlcv run risk``: run the risk topology until SIGINT/SIGTERM."""
    address = broker_address or settings.kafka_broker_address
    cfg = replace(TopologyConfig.from_settings(settings, address), consumer_group="ohlcv-risk")
    build_risk_application(cfg).run()


def main(settings: Settings, broker_address: str | None = None) -> None:
    """``ohlcv run candles``: run the candle topologies until SIGINT/SIGTERM."""
    address = broker_address or settings.kafka_broker_address
    cfg = replace(TopologyConfig.from_settings(settings, address), features=False, scoring=False, news=False,
                  risk=False)  # fmt: skip
    app = build_application(cfg)
    tune_gc()
    app.run()


def features_main(settings: Settings, broker_address: str | None = None) -> None:
    """``ohlcv run features``: run the features topology until SIGINT/SIGTERM."""
    address = broker_address or settings.kafka_broker_address
    cfg = replace(TopologyConfig.from_settings(settings, address),
                  consumer_group=settings.features_consumer_group)  # fmt: skip
    app = build_features_application(cfg)
    tune_gc()
    app.run()


def news_main(settings: Settings, broker_address: str | None = None) -> None:
    """The news topology until SIGINT/SIGTERM (``ohlcv run news`` starts the poller beside it)."""
    address = broker_address or settings.kafka_broker_address
    cfg = replace(TopologyConfig.from_settings(settings, address), consumer_group="ohlcv-news")
    build_news_application(cfg).run()


def scoring_main(settings: Settings, broker_address: str | None = None) -> None:
    """``ohlcv run scoring``: run the scoring topology until SIGINT/SIGTERM."""
    address = broker_address or settings.kafka_broker_address
    cfg = replace(
        TopologyConfig.from_settings(settings, address), consumer_group=settings.scoring_consumer_group
    )
    app = build_scoring_application(cfg)
    tune_gc()
    app.run()
