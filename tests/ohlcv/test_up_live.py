"""`ohlcv up` with INGESTION_ENABLED=true ingests a live market: here the fake Binance's
websocket playing the real XRP/USDT dump, through the whole embedded pipeline."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas.topics import CANDLE_EVENTS
from tests.ohlcv.live_stack import LiveStack, live_up
from tests.topologies.helpers import xrp_candles


@pytest.mark.broker
def test_up_ingests_the_live_websocket_market(broker: str, tmp_path: Path) -> None:
    with live_up(tmp_path, broker, speed=120, KAFKA_CONSUMER_GROUP=f"up-{uuid.uuid4().hex[:6]}") as stack:
        _ingests(stack, broker)
    assert stack.proc.returncode in (0, 130), stack.output[-3000:]


def _ingests(stack: LiveStack, broker: str) -> None:
    proc = stack.proc
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"c-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    try:
        # the fixed topic names of `ohlcv up`; assign (no group join wait on this broker)
        deadline = time.monotonic() + 90
        while CANDLE_EVENTS.name not in consumer.list_topics(timeout=5).topics:
            assert time.monotonic() < deadline and proc.poll() is None, "ohlcv up did not create its topics"
            time.sleep(0.5)
        consumer.assign([TopicPartition(CANDLE_EVENTS.name, p, 0) for p in range(CANDLE_EVENTS.partitions)])
        events: list[dict[str, object]] = []
        appended: set[int] = set()
        while len(appended) < 10:
            assert time.monotonic() < deadline, f"only {len(appended)} appends: {events[-5:]}"
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            ev = json.loads(msg.value())
            if ev["symbol"] == "XRPUSDT" and ev["interval"] == "1m":
                events.append(ev)
                if ev["type"] == "append":
                    appended.update(c["open_time"] for c in ev["candles"])  # type: ignore[attr-defined]
        types = {e["type"] for e in events}
        assert {"partial_update", "partial_close", "append"} <= types
        first = min(appended)
        assert sorted(appended)[:10] == [first + i * 60_000 for i in range(10)]  # contiguous
        real = {c.open_time: c.close for c in xrp_candles()}
        for e in events:
            if e["type"] == "append":
                for c in e["candles"]:  # type: ignore[attr-defined]
                    assert c["close"] == real[c["open_time"]]  # the real market, as Binance sent it
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        consumer.close()
