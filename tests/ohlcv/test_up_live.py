"""`ohlcv up` with INGESTION_ENABLED=true ingests a live market: here the fake Binance's
websocket playing the real XRP/USDT dump, through the whole embedded pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from ohlcv.infra.broker import free_port
from ohlcv.infra.process import stop_process
from ohlcv.settings import Settings
from schemas.topics import CANDLE_EVENTS
from tests.ohlcv.live_stack import OHLCV, LiveStack, live_up
from tests.topologies.helpers import XRP_DUMP, xrp_candles


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


@pytest.mark.broker
def test_a_replay_started_when_healthz_answers_reaches_the_stack(tmp_path: Path) -> None:
    """`ohlcv up` (its own embedded broker, fresh DATA_DIR) is polled until /healthz says 200,
    then `ohlcv import` replays the XRP dump at once: it must find the stack's broker in the run
    file (not start a broker of its own), and the candles must reach /api/ohlcv/recent."""
    ours = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    port = free_port()
    env.update(DATA_DIR=str(tmp_path / "d"), API_PORT=str(port), TANSU_LOG="warn")
    api = f"http://127.0.0.1:{port}"
    up = subprocess.Popen([str(OHLCV), "up"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        statuses: list[tuple[int, str]] = []
        deadline = time.monotonic() + 90
        while not statuses or statuses[-1][0] != 200:
            assert time.monotonic() < deadline and up.poll() is None, f"not ready: {statuses[-3:]}"
            try:
                r = httpx.get(f"{api}/healthz", timeout=2)
                statuses.append((r.status_code, r.json()["status"]))
            except httpx.TransportError:
                time.sleep(0.02)
        assert set(statuses) <= {(503, "starting"), (200, "ok")}, statuses
        argv = [str(OHLCV), "import", "--symbol", "XRPUSDT", "--interval", "1m", str(XRP_DUMP)]
        replay = subprocess.run(argv, check=False, env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        assert replay.returncode == 0, replay.stderr
        run_file = json.loads((tmp_path / "d" / "run" / "stack.json").read_text())
        real = xrp_candles()
        sent = f"replayed {len(real):,} candles (+0 partial updates) from 1 file(s) to binance.kline.raw at "
        assert f"{sent}{run_file['broker_address']} in" in replay.stdout, replay.stdout
        newest: list[dict[str, object]] = []
        while not newest or newest[-1]["open_time"] != real[-1].open_time:
            assert time.monotonic() < deadline + 240 and up.poll() is None, f"recent: {newest[-1:]}"
            time.sleep(0.5)
            params = {"symbol": "XRPUSDT", "interval": "1m", "limit": 5}
            r = httpx.get(
                f"{api}/api/ohlcv/recent", params=params, headers={"X-API-Key": "dev-key"}, timeout=10
            )
            assert r.status_code == 200, r.text
            newest = r.json()["candles"]
        assert [(c["open_time"], c["close"]) for c in newest] == [(c.open_time, c.close) for c in real[-5:]]
        # the stack runs the features topology too: the newest candle's feature row is served
        latest: dict[str, object] = {}
        while latest.get("open_time") != real[-1].open_time:
            assert time.monotonic() < deadline + 300 and up.poll() is None, f"features: {latest}"
            time.sleep(0.5)
            r = httpx.get(f"{api}/api/features/latest", params={"symbol": "XRPUSDT", "interval": "1m"},
                          headers={"X-API-Key": "dev-key"}, timeout=10)  # fmt: skip
            assert r.status_code in (200, 404), r.text
            latest = r.json() if r.status_code == 200 else {}
        assert latest["close"] == real[-1].close and latest["window_complete"] is True
    finally:
        stop_process(up, signal.SIGINT, 30)
    assert up.returncode in (0, 130), (up.stdout.read() if up.stdout else "")[-3000:]
