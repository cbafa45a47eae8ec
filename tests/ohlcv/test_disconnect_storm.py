"""Fault: a websocket disconnect storm from Binance, through the whole stack.

`ohlcv up` with INGESTION_ENABLED=true ingests the fake Binance websocket playing the real
XRP/USDT dump (4 market minutes per second). The fake cuts every connection mid-candle, again and
again; candles that close while the client is away never come over the websocket. The stack
must reconnect after every cut, the topology must see each hole as a gap, and the gap
orchestrator must repair every one of them from the fake Binance REST (the same real data), so
that in the end, read through the API as a user would:

- every 1m candle from the first to the last stored is present, with Binance's real values;
- every gap segment the storm opened is repaired, none is left open;
- the event stream on ``ohlcv.candle.events`` has a gap_detected for each segment and a
  gap_repaired covering it, and its seqs are 1..N without a hole.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from ohlcv.infra.broker import EmbeddedBroker
from schemas.topics import CANDLE_EVENTS
from tests.ohlcv.live_stack import live_up
from tests.topologies.helpers import xrp_candles

MIN = 60_000
DROPS = 6
API_KEY = "storm-key"

pytestmark = pytest.mark.broker


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[str]:
    """A broker of its own: `ohlcv up` uses the fixed topic names."""
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as b:
        yield b.address


def _get(api: str, path: str, **params: Any) -> Any:
    params = {"symbol": "XRPUSDT", "interval": "1m", **params}
    r = httpx.get(f"{api}{path}", params=params, headers={"X-API-Key": API_KEY}, timeout=10)
    r.raise_for_status()
    return r.json()


def _all_candles(api: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = _get(api, "/api/ohlcv/history", limit=1000, after_open_time=after)
        out.extend(page["candles"])
        if page["next_after_open_time"] is None:
            return out
        after = page["next_after_open_time"]


def _events(address: str) -> list[dict[str, Any]]:
    c = Consumer({"bootstrap.servers": address, "group.id": f"s-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False})  # fmt: skip
    c.assign([TopicPartition(CANDLE_EVENTS.name, p, 0) for p in range(CANDLE_EVENTS.partitions)])
    out: list[dict[str, Any]] = []
    idle = 0
    while idle < 6:
        msgs = c.consume(1000, 0.5)
        idle = 0 if msgs else idle + 1
        for m in msgs:
            if not m.error():
                ev = json.loads(m.value())
                if ev["symbol"] == "XRPUSDT" and ev["interval"] == "1m":
                    out.append(ev)
    c.close()
    return out


def test_disconnect_storm_every_cut_recovered_every_gap_repaired(own_broker: str, tmp_path: Path) -> None:
    with live_up(tmp_path, own_broker, speed=240, BACKFILL_POLL_INTERVAL_S=0.5, API_KEY=API_KEY) as stack:
        fake, api, proc = stack.fake, stack.api, stack.proc
        deadline = time.monotonic() + 90
        while True:  # the stack is up and appending
            assert time.monotonic() < deadline and proc.poll() is None, "the stack did not start appending"
            try:
                if _get(api, "/api/ohlcv/recent", limit=5)["count"] >= 5:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)

        for _ in range(DROPS):  # the storm: cut every connection mid-candle, again and again
            before = len(fake.drops)
            conns = {c.conn_id for c in fake.connections()}
            fake.drop_connections(mid_candle=True)
            fake.wait_for(lambda f, n=before: len(f.drops) > n, 10, "a mid-candle cut")
            fake.wait_for(lambda f, old=conns: any(c.conn_id not in old for c in f.connections()), 20,
                          "a reconnect after the cut")  # fmt: skip
            time.sleep(1.5)

        deadline = time.monotonic() + 60
        while True:  # every segment the storm opened is repaired, and no hole is left in the table
            # The feed keeps playing: a cut's hole is only seen when the next candle closes, so
            # "no open segment" alone can be read just before the last cut's gap is detected.
            # The candles are read after the status, so a hole they show is either open in the
            # next status or a real loss, which the deadline fails.
            gaps = _get(api, "/api/ohlcv/gaps/status")
            candles = _all_candles(api)
            times = [c["open_time"] for c in candles]
            contiguous = times == list(range(times[0], times[-1] + MIN, MIN))
            if gaps["segments"] and gaps["open_segments"] == 0 and contiguous:
                break
            assert time.monotonic() < deadline, f"gaps not all repaired within 60 s: {gaps}"
            assert proc.poll() is None
            time.sleep(0.5)
        segments = gaps["segments"]
    assert proc.returncode in (0, 130), stack.output[-3000:]

    # every cut was recovered: one drop per storm step, a connection after each
    assert len(fake.drops) == DROPS

    # the table: contiguous from first to last, Binance's real values
    times = [c["open_time"] for c in candles]
    assert times == list(range(times[0], times[-1] + MIN, MIN)), "a hole survived the storm"
    real = {c.open_time: c for c in xrp_candles()}
    for c in candles:
        r = real[c["open_time"]]
        assert (c["open"], c["high"], c["low"], c["close"], c["volume"]) == (
            r.open,
            r.high,
            r.low,
            r.close,
            r.volume,
        )
    assert any(c["source"] == "rest" for c in candles), "no candle came from a REST repair"

    # every segment repaired, and the event stream told it: detected, then repaired, seqs 1..N
    assert all(s["state"] == "repaired" for s in segments), segments
    events = _events(own_broker)
    seqs = sorted({e["seq"] for e in events})
    assert seqs == list(range(1, len(seqs) + 1)), "a hole in the event seqs"
    detected = {(e["from_open_time"], e["to_open_time"]) for e in events if e["type"] == "gap_detected"}
    repaired = {e["segment_id"] for e in events if e["type"] == "gap_repaired"}
    assert detected, "the storm opened no gap (cuts too short to lose a candle?)"
    assert {s["segment_id"] for s in segments} <= repaired
    missed = set().union(*(range(a, b + MIN, MIN) for a, b in detected))
    assert missed <= set(times), "a detected bar is missing from the table"
