"""Malformed records mixed into the raw topic are dead-lettered and counted; the rest flows."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, TopicPartition

from schemas.events import DeadLetter
from schemas.klines import raw_from_candle
from tests.topologies.helpers import vision_candles
from tests.topologies.pipeline import produce, run_topology, unique_topics
from topologies.candles import DEAD_LETTERS


def _bad_records(good: bytes) -> list[tuple[str, bytes]]:
    broken = json.loads(good)
    broken["event"]["k"]["h"] = "0.0001"  # high below low
    unknown = json.loads(good)
    unknown["event"]["e"] = "trade"
    return [
        ("LINKUSDT:1m", b"{not json"),
        ("LINKUSDT:1m", b"\xff\xfe binary"),
        ("LINKUSDT:1m", orjson.dumps(broken)),
        ("LINKUSDT:1m", orjson.dumps(unknown)),
        ("LINKUSDT:1m", b'{"source": "ws", "event": {"e": "kline", "k": {"i": "7m"}}}'),
    ]


@pytest.mark.broker
def test_malformed_records_are_dead_lettered_and_the_pipeline_is_unaffected(
    broker: str, topic_prefix: str, ch: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    topics = unique_topics(broker, topic_prefix)
    candles = list(vision_candles("LINKUSDT")[:600])
    sample = orjson.dumps(raw_from_candle(candles[0], source="ws", received_at=0))
    bad = _bad_records(sample)
    records: list[tuple[str, bytes]] = []
    for i, c in enumerate(candles):
        records.append((c.key, orjson.dumps(raw_from_candle(c, source="ws", received_at=0))))
        if i % 120 == 60:
            records.append(bad[(i // 120) % len(bad)])
    before = DEAD_LETTERS.labels(stage="decode")._value.get()
    produce(broker, topics["raw"], records)
    run_topology(broker, topics, ch_url, ch_db, tmp_path / "state", resample=())

    assert ch.query("SELECT count() FROM ohlcv_candles FINAL").result_rows[0][0] == 600
    assert ch.query("SELECT count() FROM gap_segments").result_rows[0][0] == 0
    assert DEAD_LETTERS.labels(stage="decode")._value.get() - before == len(bad)
    c = Consumer({"bootstrap.servers": broker, "group.id": uuid.uuid4().hex, "enable.auto.commit": False})
    c.assign([TopicPartition(topics["dead"], 0, 0)])
    letters = []
    while len(letters) < len(bad):
        msg = c.poll(10)
        assert msg is not None, f"only {len(letters)} dead letters"
        letters.append(DeadLetter.model_validate_json(msg.value()))
    c.close()
    assert all(dl.source.startswith(topics["raw"] + "[") and "@" in dl.source for dl in letters)
    reasons = " | ".join(dl.reason for dl in letters)
    assert "high" in reasons or "out of order" in reasons
    assert "trade" in reasons and "symbol None" in reasons and "not valid UTF-8" in reasons
