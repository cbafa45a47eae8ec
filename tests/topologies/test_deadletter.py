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
from schemas.klines import raw_batch, raw_from_candle
from tests.schemas.test_klines import BAD_CASES, ROW_INDEX
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


@pytest.mark.broker
def test_a_malformed_batch_row_is_refused_alone_and_a_batch_under_another_key_whole(
    broker: str, topic_prefix: str, ch: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    """Batch records (REST pages, imports): a bad row is dead-lettered with its index and the
    rest of the batch is stored; a batch whose stream is not its key touches no state."""
    topics = unique_topics(broker, topic_prefix)
    candles = list(vision_candles("LINKUSDT")[:600])
    records: list[tuple[str, bytes]] = []
    bad_rows = 0
    for i in range(0, 600, 100):
        value = raw_batch(candles[i : i + 100], source="rest", received_at=0)
        broken = list(value["klines"][10])
        if i % 200 == 0:
            broken[2] = "0.0001"  # high below low, beside the good row of the same minute
        else:
            broken[5] = "NaN"  # volume
        value["klines"].insert(11, broken)
        bad_rows += 1
        records.append(("LINKUSDT:1m", orjson.dumps(value)))
    stray = raw_batch(candles[:5], source="rest", received_at=0)
    records.append(("AVAXUSDT:1m", orjson.dumps(stray)))  # LINKUSDT rows under AVAXUSDT's key
    records.append(("LINKUSDT:1m", orjson.dumps({**stray, "klines": []})))
    before = DEAD_LETTERS.labels(stage="decode")._value.get()
    produce(broker, topics["raw"], records)
    run_topology(broker, topics, ch_url, ch_db, tmp_path / "state", resample=())

    assert ch.query("SELECT count() FROM ohlcv_candles FINAL").result_rows[0][0] == 600
    assert (
        ch.query("SELECT count() FROM ohlcv_candles FINAL WHERE symbol = 'AVAXUSDT'").result_rows[0][0] == 0
    )
    assert ch.query("SELECT count() FROM gap_segments").result_rows[0][0] == 0
    stored = ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), high, volume FROM ohlcv_candles FINAL ORDER BY open_time"
    ).result_rows
    assert stored == [(c.open_time, c.high, c.volume) for c in candles]
    assert DEAD_LETTERS.labels(stage="decode")._value.get() - before == bad_rows + 2
    c = Consumer({"bootstrap.servers": broker, "group.id": uuid.uuid4().hex, "enable.auto.commit": False})
    c.assign([TopicPartition(topics["dead"], 0, 0)])
    letters = []
    while len(letters) < bad_rows + 2:
        msg = c.poll(10)
        assert msg is not None, f"only {len(letters)} dead letters"
        letters.append(DeadLetter.model_validate_json(msg.value()))
    c.close()
    reasons = [dl.reason for dl in letters]
    assert sum("klines[11]" in r for r in reasons) == bad_rows
    assert any("prices out of order: high=0.0001 < low=" in r for r in reasons)
    assert any("klines[11].volume='NaN'" in r for r in reasons)
    assert any("under key 'AVAXUSDT:1m'" in r for r in reasons)
    assert any("1..1000 rows" in r for r in reasons)
    assert {dl.key for dl in letters} == {"LINKUSDT:1m", "AVAXUSDT:1m"}


def _letters(broker: str, topic: str, n: int) -> list[DeadLetter]:
    c = Consumer({"bootstrap.servers": broker, "group.id": uuid.uuid4().hex, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    letters: list[DeadLetter] = []
    while len(letters) < n:
        msg = c.poll(10)
        assert msg is not None, f"only {len(letters)} dead letters of {n}"
        letters.append(DeadLetter.model_validate_json(msg.value()))
    assert c.poll(1) is None, "more dead letters than bad candles"
    c.close()
    return letters


@pytest.mark.broker
def test_every_bad_candle_is_dead_lettered_with_its_reason_and_none_is_stored(
    broker: str, topic_prefix: str, ch: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    """Each refused case of the parser (tests/schemas/test_klines.py), once as a websocket kline
    just before the real kline of its minute and once as a row of a REST batch beside it: every
    one reaches the dead-letter topic with its reason, ohlcv_candles FINAL holds exactly the
    real candles (a bad one stored would change a value, add a row or open a gap)."""
    topics = unique_topics(broker, topic_prefix)
    candles = list(vision_candles("LINKUSDT")[:600])
    records: list[tuple[str, bytes]] = []
    expected: list[tuple[str, str]] = []  # (where, reason fragment)
    for j, (case, bad, reason, _row_reason) in enumerate(BAD_CASES):
        c = candles[10 + j * 2]
        raw = raw_from_candle(c, source="ws", received_at=0)
        raw["event"]["k"].update(bad(c))
        records.append((c.key, orjson.dumps(raw)))
        expected.append((f"ws {case}", reason))
    for c in candles[:300]:
        records.append((c.key, orjson.dumps(raw_from_candle(c, source="ws", received_at=0))))
    value = raw_batch(candles[300:], source="rest", received_at=0)
    for j, (case, bad, _reason, row_reason) in enumerate(BAD_CASES):
        c = candles[310 + j * 2]
        row = list(value["klines"][10 + j * 2])
        for field, v in bad(c).items():
            row[ROW_INDEX[field]] = v
        value["klines"].append(row)
        expected.append((f"rest {case}", row_reason))
    records.append(("LINKUSDT:1m", orjson.dumps(value)))
    produce(broker, topics["raw"], records)
    run_topology(broker, topics, ch_url, ch_db, tmp_path / "state", resample=())

    stored = ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), open, high, low, close, volume, quote_volume, trades,"
        " taker_buy_base, taker_buy_quote FROM ohlcv_candles FINAL ORDER BY open_time"
    ).result_rows
    assert stored == [
        (c.open_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades,
         c.taker_buy_base, c.taker_buy_quote)
        for c in candles
    ]  # fmt: skip
    assert ch.query("SELECT count() FROM gap_segments FINAL").result_rows[0][0] == 0
    letters = _letters(broker, topics["dead"], len(expected))
    assert {dl.key for dl in letters} == {"LINKUSDT:1m"}
    n = len(BAD_CASES)
    for (where, fragment), dl in zip(expected, letters, strict=True):
        assert fragment in dl.reason, (where, dl.reason)
    assert all(dl.reason.startswith("klines[") for dl in letters[n:])
    assert [int(dl.reason[7 : dl.reason.index("]")]) for dl in letters[n:]] == list(range(300, 300 + n))
