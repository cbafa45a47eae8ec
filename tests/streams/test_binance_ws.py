"""The kline websocket client and its Quix source against the fake Binance, with real Vision data.

The fake plays a 1m candle in 0.4 s (three x:false updates, then x:true); timeouts are
shortened to match, so each test takes seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client import REGISTRY
from quixstreams import Application

from fakes.binance import Datasets, FakeBinance, KlineSeries, Playback, load_vision_zip
from ohlcv.infra.kafka import ensure_topics
from schemas.events import DeadLetter
from schemas.topics import DEAD_LETTER, RAW_KLINES
from streams.binance_ws import (
    PRODUCER_EXTRA_CONFIG,
    BinanceKlineSource,
    DeadLetterRecord,
    KlineRecord,
    KlineStreamClient,
    WsConfig,
    WsRecord,
)
from tests.conftest import DATA

VISION = DATA / "binance-vision" / "futures-um" / "1m"
PLAY = Playback(speed=150, updates_per_candle=3)  # a 1m candle every 0.4 s
FAST = WsConfig(backoff_initial_s=0.02, backoff_max_s=0.2, silence_timeout_s=5.0, control_interval_s=0.05)
AVAX, LINK, NEAR = ("AVAXUSDT", "1m"), ("LINKUSDT", "1m"), ("NEARUSDT", "1m")


@pytest.fixture(scope="module")
def datasets() -> Datasets:
    ds = Datasets()
    for sym in ("AVAXUSDT", "LINKUSDT", "NEARUSDT"):
        s = load_vision_zip(VISION / f"{sym}-1m-2026-02.zip")
        ds.add(KlineSeries(s.market, s.symbol, s.interval, s.klines[:600]))
    return ds


@pytest.fixture
def fake(datasets: Datasets) -> Iterator[FakeBinance]:
    with FakeBinance(datasets, playback=PLAY) as f:
        yield f


class Records:
    def __init__(self) -> None:
        self.all: list[WsRecord] = []

    def __call__(self, record: WsRecord) -> None:
        self.all.append(record)

    @property
    def klines(self) -> list[KlineRecord]:
        return [r for r in self.all if isinstance(r, KlineRecord)]

    @property
    def dead(self) -> list[DeadLetterRecord]:
        return [r for r in self.all if isinstance(r, DeadLetterRecord)]

    def closed(self, key: str = "AVAXUSDT:1m") -> list[int]:
        return [r.candle.open_time for r in self.klines if r.key == key and r.candle.is_closed]


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(
    fake: FakeBinance, streams: list[tuple[str, str]], config: WsConfig = FAST
) -> AsyncIterator[tuple[KlineStreamClient, Records]]:
    records = Records()
    client = KlineStreamClient(fake.urls.usdm_ws, streams, market="usdm", on_record=records, config=config)
    task = asyncio.create_task(client.run())
    try:
        yield client, records
    finally:
        client.stop()
        await asyncio.wait_for(task, 5)


def contiguous(open_times: list[int]) -> bool:
    return all(b - a == 60_000 for a, b in itertools.pairwise(open_times))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_disconnect_mid_candle_reconnects_and_the_candle_still_closes(
    fake: FakeBinance, datasets: Datasets
) -> None:
    avax = datasets.get("usdm", "AVAXUSDT", "1m")
    assert avax is not None
    async with running(fake, [AVAX]) as (client, rec):
        await until(lambda: len(rec.closed()) >= 2, "two closed candles")
        await asyncio.to_thread(fake.drop_connections, mid_candle=True)
        await until(lambda: bool(fake.drops), "the drop")
        cut = fake.drops[0].open_time
        assert cut is not None
        await until(lambda: cut in rec.closed(), "the x:true of the candle cut in the middle")
        await until(lambda: max(rec.closed()) > cut, "the next candle closing")
    assert dict(client.stats.reconnects) == {"connection_lost": 1}
    closed = rec.closed()
    assert contiguous(closed) and len(set(closed)) == len(closed)  # no closed candle lost or doubled
    final = next(r for r in rec.klines if r.candle.is_closed and r.candle.open_time == cut)
    k = avax.klines[avax.open_times.index(cut)]
    assert [final.value["event"]["k"][f] for f in "ohlcvqnVQ"] == [
        k.open,
        k.high,
        k.low,
        k.close,
        k.volume,
        k.quote_volume,
        k.trades,
        k.taker_buy_base,
        k.taker_buy_quote,
    ]
    assert [r for r in rec.klines if r.candle.open_time == cut and not r.candle.is_closed], "updates"
    last = rec.klines[-1].value
    lag_s = (last["received_at"] - last["event"]["E"]) / 1000
    assert metric("ingestion_lag_seconds", symbol="AVAXUSDT", interval="1m") == pytest.approx(lag_s)
    assert metric("binance_ws_messages_total", symbol="AVAXUSDT", interval="1m") >= len(rec.klines)


async def test_reconnect_backoff_grows_exponentially_with_jitter() -> None:
    config = dataclasses.replace(FAST, backoff_initial_s=0.01, backoff_max_s=0.08)
    client = KlineStreamClient("ws://127.0.0.1:1", [AVAX], market="usdm", on_record=Records(), config=config)
    for attempt, cap in [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.08), (5, 0.08), (9, 0.08)]:
        delays = [client._backoff(attempt) for _ in range(200)]
        assert cap / 2 <= min(delays) and max(delays) <= cap and len(set(delays)) > 100
    # nothing listens on port 1: every attempt fails and is retried after a back-off, not at once
    task = asyncio.create_task(client.run())
    await asyncio.sleep(0.5)
    client.stop()
    await asyncio.wait_for(task, 5)
    assert 4 <= client.stats.connect_failures <= 0.5 / 0.04 + 3
    assert client.stats.connects == 0 and client.stats.reconnects == {}


async def test_a_silent_connection_is_declared_dead_and_replaced(fake: FakeBinance) -> None:
    before = metric("binance_ws_reconnects_total", reason="silent")
    config = dataclasses.replace(FAST, silence_timeout_s=0.6)
    async with running(fake, [AVAX], config) as (client, rec):
        await until(lambda: len(rec.closed()) >= 1, "a closed candle")
        silenced_at = time.monotonic()
        await asyncio.to_thread(fake.go_silent)
        await until(lambda: client.stats.reconnects["silent"] == 1, "the silent reconnect")
        detected_after = time.monotonic() - silenced_at
        n = len(rec.klines)
        await until(lambda: len(rec.klines) >= n + 4, "messages on the new connection")
        # the client closed the silent connection itself; only the new one is left
        assert [c.silent for c in fake.connections()] == [False]
    assert detected_after >= 0.6 - 0.15  # the last frame may have arrived just before silence
    assert dict(client.stats.reconnects) == {"silent": 1}
    assert metric("binance_ws_reconnects_total", reason="silent") == before + 1
    assert client.stats.connects == 2


async def test_rollover_before_the_server_cut_loses_no_closed_candle(datasets: Datasets) -> None:
    # the server cuts at 1.5 s (Binance: 24 h); the client rolls over at 0.7 s (default 23 h 50 m)
    config = dataclasses.replace(FAST, lifetime_s=0.7, handover_s=0.25)
    with FakeBinance(datasets, playback=PLAY, lifetime_s=1.5) as fake:
        async with running(fake, [AVAX], config) as (client, rec):
            await until(lambda: client.stats.reconnects["lifetime"] >= 3, "three rollovers")
            first = rec.closed()[0]
            await until(lambda: len(rec.closed()) >= 2 and rec.closed()[-1] > first + 60_000, "more candles")
    assert set(client.stats.reconnects) == {"lifetime"}  # never cut by the server, never lost
    closed = rec.closed()
    assert contiguous(closed) and len(set(closed)) == len(closed)
    events = [(r.value["event"]["k"]["t"], r.value["event"]["E"]) for r in rec.klines]
    assert len(set(events)) == len(events)  # the overlap's duplicates were dropped, once each
    assert client.stats.duplicates_dropped >= 1  # both connections were read: make-before-break
    assert all(b > a for a, b in itertools.pairwise(events))  # no update lost or reordered


async def test_malformed_frames_are_dead_lettered_and_counted_while_good_frames_continue(
    fake: FakeBinance,
) -> None:
    before = metric("binance_ws_deadletter_total", reason="malformed_kline")
    async with running(fake, [AVAX]) as (client, rec):
        await until(lambda: len(rec.klines) >= 2, "good frames")
        good = json.loads(next(f.text for f in fake.sent_frames if f.stream))
        high_below_low = json.loads(json.dumps(good))
        high_below_low["data"]["k"]["h"] = "0.0001"
        wrong_stream = {"stream": "linkusdt@kline_1m", "data": good["data"]}
        trade = {"stream": "avaxusdt@trade", "data": {"e": "trade", "E": 1, "s": "AVAXUSDT", "p": "10.1"}}
        frames: list[str | bytes] = [
            "not json{", b"\x00\x01binary", json.dumps([1, 2]), json.dumps(trade),
            json.dumps(high_below_low), json.dumps(wrong_stream),
        ]  # fmt: skip
        await asyncio.to_thread(fake.send_frames, frames)
        await until(lambda: len(rec.dead) == 6, "six dead letters")
        n = len(rec.klines)
        await until(lambda: len(rec.klines) >= n + 4, "good frames after the bad ones")
    assert dict(client.stats.dead_letters) == {
        "bad_json": 1, "binary_frame": 1, "bad_envelope": 1, "unknown_event": 1, "malformed_kline": 1,
        "stream_mismatch": 1,
    }  # fmt: skip
    assert metric("binance_ws_deadletter_total", reason="malformed_kline") == before + 1
    assert client.stats.reconnects == {}
    for d in rec.dead:
        DeadLetter.model_validate(d.value)
        assert re.fullmatch(r"ws:(\?|[a-z]+@[a-z_0-9]+)@0\.1#\d+", d.value["source"]), d.value["source"]
    by_reason = {d.reason: d for d in rec.dead}
    assert by_reason["bad_json"].value["payload"] == "not json{"
    assert by_reason["bad_json"].value["stage"] == "binance_ws.decode"
    bad_kline = by_reason["malformed_kline"]
    assert bad_kline.key == "AVAXUSDT:1m" and bad_kline.value["stage"] == "binance_ws.validate"
    assert "prices out of order" in bad_kline.value["reason"]
    assert json.loads(bad_kline.value["payload"]) == high_below_low
    assert by_reason["unknown_event"].value["source"].startswith("ws:avaxusdt@trade@0.1#")


async def test_subscribe_and_unsubscribe_live_without_reconnecting(datasets: Datasets) -> None:
    # the fake pings every 0.1 s and drops a client that does not pong within 0.3 s
    with FakeBinance(datasets, playback=PLAY, ping_interval_s=0.1, ping_timeout_s=0.3) as fake:
        async with running(fake, [AVAX]) as (client, rec):
            await until(lambda: len(rec.klines) >= 2, "AVAX frames")
            await client.update_streams([AVAX, LINK])
            await until(lambda: any(r.key == "LINKUSDT:1m" for r in rec.klines), "LINK frames")
            await client.update_streams([LINK])
            after_unsubscribe = len(rec.all)
            await until(lambda: len(rec.all) >= after_unsubscribe + 6, "more frames")
            conns = fake.connections()
        control = fake.control_requests
    assert [(json.loads(c.message), c.reply) for c in control] == [
        ({"method": "SUBSCRIBE", "params": ["linkusdt@kline_1m"], "id": 1}, '{"result":null,"id":1}'),
        ({"method": "UNSUBSCRIBE", "params": ["avaxusdt@kline_1m"], "id": 2}, '{"result":null,"id":2}'),
    ]
    assert client.stats.acks == 2 and client.stats.reconnects == {} and client.stats.connects == 1
    assert {r.key for r in rec.all[after_unsubscribe:]} == {"LINKUSDT:1m"}
    assert [c.streams for c in conns] == [frozenset({"linkusdt@kline_1m"})]


async def test_an_update_before_run_only_changes_the_set_it_connects_with(fake: FakeBinance) -> None:
    rec = Records()
    client = KlineStreamClient(fake.urls.usdm_ws, [AVAX], market="usdm", on_record=rec, config=FAST)
    await client.update_streams([LINK, NEAR])
    task = asyncio.create_task(client.run())
    await until(lambda: {r.key for r in rec.klines} == {"LINKUSDT:1m", "NEARUSDT:1m"}, "LINK and NEAR")
    assert [c.streams for c in fake.connections()] == [frozenset({"linkusdt@kline_1m", "nearusdt@kline_1m"})]
    client.stop()
    await asyncio.wait_for(task, 5)
    assert fake.control_requests == [] and client.stats.connects == 1


async def test_streams_are_sharded_at_the_per_connection_limit(fake: FakeBinance) -> None:
    config = dataclasses.replace(FAST, max_streams_per_connection=2)
    async with running(fake, [AVAX, LINK, NEAR], config) as (client, rec):
        await until(
            lambda: {r.key for r in rec.klines} == {"AVAXUSDT:1m", "LINKUSDT:1m", "NEARUSDT:1m"}, "all"
        )
        assert sorted(c.streams for c in fake.connections()) == sorted(
            [frozenset({"avaxusdt@kline_1m", "linkusdt@kline_1m"}), frozenset({"nearusdt@kline_1m"})]
        )
        await client.update_streams([AVAX, LINK])  # the second connection has nothing left
        await until(lambda: len(fake.connections()) == 1, "the empty connection closed")
        await client.update_streams([AVAX, LINK, NEAR])
        await until(lambda: len(fake.connections()) == 2, "a second connection again")
        n = len(rec.all)
        await until(lambda: any(r.key == "NEARUSDT:1m" for r in rec.all[n:]), "NEAR again")
    assert client.stats.reconnects == {} and client.stats.connects == 3


@pytest.mark.broker
def test_source_in_a_quix_application_produces_the_exact_records(
    broker: str, datasets: Datasets, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    raw = dataclasses.replace(RAW_KLINES, name=f"t{run}.raw", retention_ms=3_600_000, retention_bytes=-1)
    dlq = dataclasses.replace(DEAD_LETTER, name=f"t{run}.deadletter", retention_ms=3_600_000)
    ensure_topics(broker, (raw, dlq))
    playback = dataclasses.replace(PLAY, autostart=False, max_candles=3)
    with FakeBinance(datasets, playback=playback) as fake:
        app = Application(
            broker,
            consumer_group=f"t{run}",
            state_dir=str(tmp_path / "state"),
            use_changelog_topics=False,
            consumer_extra_config={"session.timeout.ms": 6000},
            auto_offset_reset="earliest",
            producer_extra_config=PRODUCER_EXTRA_CONFIG,
        )
        source = BinanceKlineSource(
            "binance-ws-test", base_url=fake.urls.usdm_ws, market="usdm", streams=[AVAX],
            raw_topic=raw.name, dead_letter_topic=dlq.name, config=FAST,
        )  # fmt: skip
        assert source.add_to(app).name == raw.name
        failure: list[BaseException] = []

        def drive() -> None:
            try:
                fake.wait_for(lambda f: bool(f.connections()), 30, "the source's connection")
                source.update_streams([AVAX, LINK])  # from this process into the source process
                fake.wait_for(lambda f: len(f.control_requests) == 1, 10, "SUBSCRIBE")
                fake.play()
                fake.wait_for(lambda f: len(f.sent_frames) == 24, 10, "2 streams x 3 candles x 4 events")
                fake.send_frames(["garbage"])
                fake.wait_for(lambda f: len(f.sent_frames) == 25, 5, "the garbage frame")
                time.sleep(0.5)
            except BaseException as exc:
                failure.append(exc)
            finally:
                app.stop()

        threading.Thread(target=drive, daemon=True).start()
        app.run()
        assert not failure, failure
        sent = fake.sent_frames
        control = fake.control_requests
    assert json.loads(control[0].message)["params"] == ["linkusdt@kline_1m"]
    records = consume(broker, [(raw.name, raw.partitions), (dlq.name, 1)], want=25)
    kl = [r for r in records if r[0] == raw.name]
    dl = [r for r in records if r[0] == dlq.name]
    expected = [
        (f"{f.stream.split('@')[0].upper()}:1m", json.loads(f.text)["data"]) for f in sent if f.stream
    ]
    for key in ("AVAXUSDT:1m", "LINKUSDT:1m"):  # per key, in order, exactly the events Binance sent
        got = [(r[1], r[2]["event"]) for r in kl if r[1] == key]
        assert got == [e for e in expected if e[0] == key] and len(got) == 12
    for _, _, value, ts in kl:
        assert set(value) == {"source", "market", "received_at", "event"}
        assert (value["source"], value["market"]) == ("ws", "usdm") and ts == value["received_at"]
    assert len(dl) == 1
    (_, key, value, _) = dl[0]
    assert key == "ws" and value["payload"] == "garbage" and value["reason"].startswith("bad_json")
    DeadLetter.model_validate(value)


def consume(broker: str, topics: list[tuple[str, int]], want: int, timeout_s: float = 20.0) -> list[Any]:
    """Every record of the topics from the beginning: (topic, key, value, timestamp)."""
    c = Consumer(
        {"bootstrap.servers": broker, "group.id": f"read-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, n in topics for p in range(n)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                if len(out) >= want:
                    break
                continue
            out.append((m.topic(), m.key().decode(), json.loads(m.value()), m.timestamp()[1]))
    finally:
        c.close()
    return out
