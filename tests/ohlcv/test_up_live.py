"""`ohlcv up` with INGESTION_ENABLED=true ingests a live market: here the fake Binance's
websocket playing the real XRP/USDT dump, through the whole embedded pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from ohlcv.fake_binance import Datasets, FakeBinance, Playback
from ohlcv.infra.broker import free_port
from schemas.topics import CANDLE_EVENTS
from tests.topologies.helpers import xrp_candles

REPO = Path(__file__).resolve().parents[2]
OHLCV = Path(sys.executable).parent / "ohlcv"


@pytest.mark.broker
def test_up_ingests_the_live_websocket_market(broker: str, tmp_path: Path) -> None:
    ds = Datasets.from_data_dir(REPO / "data")
    fake = FakeBinance(ds, playback=Playback(speed=120, updates_per_candle=2))
    urls = fake.start()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "d"),
        "KAFKA_BROKER_ADDRESS": broker,
        "KAFKA_CONSUMER_GROUP": f"up-{uuid.uuid4().hex[:6]}",
        "INGESTION_ENABLED": "true",
        "BINANCE_SPOT_WS_URL": urls.spot_ws,
        "SYMBOLS": "XRPUSDT",
        "INTERVALS": "1m",
        "RESAMPLE_INTERVALS": "5m",
        "API_PORT": str(free_port()),
    }
    proc = subprocess.Popen([str(OHLCV), "up"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
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
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            fake.stop()
    assert proc.returncode in (0, 130), proc.returncode
