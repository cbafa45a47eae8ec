"""Kafka admin and client configuration: topic creation from the registry, client settings."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ohlcv.errors import BrokerUnavailableError
from schemas.topics import ALL_TOPICS, TopicSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnsureResult:
    created: list[str]
    existing: list[str]


def ensure_topics(
    address: str, specs: tuple[TopicSpec, ...] = ALL_TOPICS, timeout_s: float = 15.0
) -> EnsureResult:
    """Create every topic in ``specs`` that does not exist yet; existing ones are left as they are."""
    admin = AdminClient({"bootstrap.servers": address})
    try:
        present = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"KAFKA_BROKER_ADDRESS={address} is unreachable: {exc}") from exc
    missing = [s for s in specs if s.name not in present]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, 1, config=s.config()) for s in missing],
            request_timeout=timeout_s,
        )
        for name, fut in futures.items():
            try:
                fut.result()
                created.append(name)
                logger.info("topic created name=%s", name)
            except KafkaException as exc:
                if exc.args[0].code() == 36:  # TOPIC_ALREADY_EXISTS: a concurrent ensure won
                    continue
                raise BrokerUnavailableError(f"creating topic {name} failed: {exc}") from exc
    return EnsureResult(created=created, existing=sorted(s.name for s in specs if s.name in present))


def assign_from_end(consumer: Consumer, topics: Sequence[str], timeout_s: float = 5.0) -> int:
    """Assign every partition of ``topics`` at its high watermark, fixed now (not at the first
    fetch), so every record produced after this returns is delivered; returns the partitions.
    BrokerUnavailableError when a topic does not exist (yet) or the broker does not answer."""
    tps = []
    for topic in topics:
        try:
            meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            raise BrokerUnavailableError(f"listing topic {topic} failed: {exc}") from exc
        if meta is None or meta.error is not None or not meta.partitions:
            raise BrokerUnavailableError(f"topic {topic} has no partitions (yet)")
        for p in sorted(meta.partitions):
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            except KafkaException:
                high = OFFSET_END
            tps.append(TopicPartition(topic, p, high))
    consumer.assign(tps)
    return len(tps)
