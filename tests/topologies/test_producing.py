"""FastProducer: many records per call through Quix Streams' own producer, on the real broker."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from quixstreams.internal_producer import InternalProducer
from quixstreams.kafka.exceptions import KafkaProducerDeliveryError

from ohlcv.infra.broker import EMBEDDED_CONSUMER_CONFIG
from tests.topologies.pipeline import unique_topics
from topologies.producing import FastProducer

pytestmark = pytest.mark.broker


def test_the_pinned_quix_takes_the_fast_path_and_tracks_every_produced_offset(
    broker: str, topic_prefix: str
) -> None:
    """With the installed Quix Streams the fast path is taken (an upgrade that renames its
    private names fails here); every record arrives in order, and Quix's own delivery callback
    saw each one: its produced offsets, which the checkpoint commits against, are the last."""
    topic = unique_topics(broker, topic_prefix)["features"]
    quix = InternalProducer(broker_address=broker)
    fast = FastProducer(quix)
    assert fast.fast
    values = [f"row-{i}".encode() for i in range(3000)]
    fast.produce(topic, values[:1000], "XRPUSDT:1m", 1_700_000_000_000)
    fast.produce(topic, iter(values[1000:]), "XRPUSDT:1m", None)
    quix.flush()
    (tp, last), *others = quix.offsets.items()
    assert not others and tp[0] == topic and last == 2999
    c = Consumer({"bootstrap.servers": broker, "group.id": topic_prefix, **EMBEDDED_CONSUMER_CONFIG})
    c.assign([TopicPartition(topic, tp[1], 0)])
    got = []
    while len(got) < len(values):
        msgs = c.consume(1000, 10)
        assert msgs, f"{len(got)} of {len(values)} records arrived"
        got += [m.value() for m in msgs if m.error() is None]
    c.close()
    assert got == values


def test_a_latched_delivery_error_is_raised_before_anything_more_is_produced(
    broker: str, topic_prefix: str
) -> None:
    topic = unique_topics(broker, topic_prefix)["features"]
    quix = InternalProducer(broker_address=broker)
    fast = FastProducer(quix)
    quix._on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), None)  # what librdkafka reports
    with pytest.raises(KafkaProducerDeliveryError):
        fast.produce(topic, [b"x"], "k", None)
    fast.produce(topic, [b"y"], "k", None)  # raised once, as Quix does
    quix.flush()
    assert list(quix.offsets.values()) == [0]


def test_without_the_private_names_it_falls_back_to_the_public_produce() -> None:
    calls: list[dict[str, object]] = []

    class Public:
        def produce(self, **kw: object) -> None:
            calls.append(kw)

    fast = FastProducer(Public())
    assert not fast.fast
    fast.produce("t", [b"a", b"b"], "k", 5)
    assert calls == [{"topic": "t", "value": v, "key": "k", "timestamp": 5} for v in (b"a", b"b")]
