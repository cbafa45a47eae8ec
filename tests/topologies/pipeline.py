"""Run the real candle topology against the session broker and a chDB database, in-process."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import Producer

from ohlcv.infra.kafka import ensure_topics
from schemas.klines import Candle, raw_batch, raw_from_candle
from schemas.topics import CANDLE_EVENTS, DEAD_LETTER, RAW_KLINES, TopicSpec
from topologies.runner import TopologyConfig, build_application


def unique_topics(broker: str, prefix: str) -> dict[str, str]:
    names = {}
    specs = []
    for role, spec in (("raw", RAW_KLINES), ("events", CANDLE_EVENTS), ("dead", DEAD_LETTER)):
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
    """Produce candles (one record each, or batch records of up to ``batch`` consecutive closed
    candles of one stream) or ready (key, value) records; returns how many candles/records."""
    import orjson

    # murmur2: the partitioner of Quix and of every producer of ours, so keys keep one partition
    p = Producer({"bootstrap.servers": broker, "enable.idempotence": True, "linger.ms": 20,
                  "partitioner": "murmur2"})  # fmt: skip
    n = 0
    pending: list[Candle] = []

    def send() -> None:
        if len(pending) == 1:
            p.produce(
                topic,
                key=pending[0].key,
                value=orjson.dumps(raw_from_candle(pending[0], source=source, received_at=0)),
            )
        elif pending:
            p.produce(
                topic,
                key=pending[0].key,
                value=orjson.dumps(raw_batch(pending, source=source, received_at=0)),
            )
        pending.clear()

    for c in candles:
        if isinstance(c, tuple):
            p.produce(topic, key=c[0], value=c[1])
        else:
            if pending and (c.key != pending[0].key or not c.is_closed):
                send()
            pending.append(c)
            if len(pending) >= batch or not c.is_closed:
                send()
        n += 1
        if n % 5000 == 0:
            p.poll(0)
    send()
    p.flush(30)
    return n


def run_topology(broker: str, topics: dict[str, str], ch_url: str, ch_db: str, state_dir: Path,
                 *, idle_timeout_s: float = 6.0, resample: tuple[str, ...] = ("5m", "1h"),
                 group: str | None = None) -> None:  # fmt: skip
    cfg = TopologyConfig(
        broker_address=broker, clickhouse_url=ch_url, clickhouse_database=ch_db,
        consumer_group=group or f"g-{uuid.uuid4().hex[:8]}", state_dir=state_dir,
        embedded_broker=True, resample_intervals=resample, raw_topic=topics["raw"],
        events_topic=topics["events"], deadletter_topic=topics["dead"],
    )  # fmt: skip
    app = build_application(cfg)
    app.run(timeout=idle_timeout_s)
