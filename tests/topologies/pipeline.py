"""Run the real candle topology against the session broker and a chDB database, in-process."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import Producer

from ohlcv.infra.kafka import ensure_topics
from schemas.klines import Candle
from schemas.topics import (
    CANDLE_EVENTS,
    DEAD_LETTER,
    FEATURES,
    GAP_QUEUE,
    NEWS_ARTICLES,
    RAW_KLINES,
    SCORES,
    TopicSpec,
)
from streams.replay import replay_to_kafka
from topologies.news_features import NewsFeatureConfig, NewsTail
from topologies.runner import TopologyConfig, build_application


def unique_topics(broker: str, prefix: str) -> dict[str, str]:
    names = {}
    specs = []
    roles = (("raw", RAW_KLINES), ("events", CANDLE_EVENTS), ("dead", DEAD_LETTER), ("gap_queue", GAP_QUEUE),
             ("features", FEATURES), ("scores", SCORES), ("news_articles", NEWS_ARTICLES))  # fmt: skip
    for role, spec in roles:
        s = TopicSpec(name=prefix + spec.name, key=spec.key, value_schema={}, description="",
                      partitions=spec.partitions, retention_ms=spec.retention_ms)  # fmt: skip
        names[role] = s.name
        specs.append(s)
    ensure_topics(broker, tuple(specs))
    return names


def produce(
    broker: str,
    topic: str,
    candles: Iterable[Candle] | Iterable[tuple[str, bytes]],
    source: str = "import",
    batch: int = 1,
) -> int:
    """Produce candles (``streams.replay.replay_to_kafka``: one record each, or batch records of
    up to ``batch`` consecutive closed candles of one stream) or ready (key, value) records;
    returns how many candles or records were sent."""
    items = list(candles)
    if not items or not isinstance(items[0], tuple):
        return replay_to_kafka(broker, items, topic=topic, source=source, batch=batch).records  # type: ignore[arg-type]
    # murmur2: the partitioner of Quix and of every producer of ours, so keys keep one partition
    p = Producer({"bootstrap.servers": broker, "enable.idempotence": True, "linger.ms": 20,
                  "partitioner": "murmur2"})  # fmt: skip
    for n, (key, value) in enumerate(items, 1):  # type: ignore[misc]
        p.produce(topic, key=key, value=value)
        if n % 5000 == 0:
            p.poll(0)
    p.flush(30)
    return len(items)


def run_topology(broker: str, topics: dict[str, str], ch_url: str, ch_db: str, state_dir: Path,
                 *, idle_timeout_s: float = 6.0, resample: tuple[str, ...] = ("5m", "1h"),
                 group: str | None = None, features: bool = False,
                 news_feature: NewsFeatureConfig | None = None) -> None:  # fmt: skip
    cfg = TopologyConfig(
        broker_address=broker, clickhouse_url=ch_url, clickhouse_database=ch_db,
        consumer_group=group or f"g-{uuid.uuid4().hex[:8]}", state_dir=state_dir,
        embedded_broker=True, resample_intervals=resample, raw_topic=topics["raw"],
        events_topic=topics["events"], deadletter_topic=topics["dead"], features=features,
        features_topic=topics["features"], news_features=news_feature is not None,
        news_feature=news_feature or NewsFeatureConfig(), news_articles_topic=topics["news_articles"],
    )  # fmt: skip
    app = build_application(cfg)
    try:
        app.run(timeout=idle_timeout_s)
    finally:
        NewsTail.stop_all()
