"""The gap orchestrator against the real topology, broker and chDB; the fake Binance is the only mock.

Real candles (a Vision month, the XRP dump) go through the real candle topology with ranges
dropped; the fake Binance serves the same real data over REST; the orchestrator repairs through
Kafka and the topology closes the segments.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from prometheus_client import REGISTRY

from fakes.binance import Datasets, FakeBinance, RestFault, load_freqtrade_json, load_vision_zip
from ohlcv.infra.clickhouse import make_client
from ohlcv.infra.kafka import ensure_topics
from ohlcv.settings import Settings
from schemas.klines import Candle
from schemas.topics import CANDLE_EVENTS, GAP_QUEUE, GapQueued
from sinks.clickhouse_bulk import insert_candles, load_files
from streams.backfill import (
    BackfillConfig,
    Orchestrator,
    RestGate,
    backfill_runs,
    segment_lifecycle,
)
from streams.backfill.triggers import GapNotifier, Trigger, TriggerConsumer, parse_trigger
from streams.continuity import ContinuityScheduler, QueueResult, queue_missing, scan
from streams.replay import replay_to_kafka
from tests.conftest import DATA
from tests.topologies.helpers import vision_candles, xrp_candles
from tests.topologies.pipeline import run_topology, unique_topics

MIN = 60_000
VISION_DIR = DATA / "binance-vision" / "futures-um" / "1m"
XRP_JSON = DATA / "freqtrade" / "binance" / "XRP_USDT-1m.json"
OUT1 = (1618883940000 + MIN, 1618893000000 - MIN, 150)  # the XRP dump's two outages: first, last, bars
OUT2 = (1619323260000 + MIN, 1619340300000 - MIN, 283)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s}s")
        time.sleep(0.1)


def drop(candles: Sequence[Candle], ranges: Sequence[tuple[int, int]]) -> list[Candle]:
    """The candles without index ranges [a, b)."""
    return [c for i, c in enumerate(candles) if not any(a <= i < b for a, b in ranges)]


def stored(ch: Client, symbol: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in ch.query(
            "SELECT toUnixTimestamp64Milli(open_time), toUnixTimestamp64Milli(close_time), open, high, low, "
            "close, volume, quote_volume, trades, taker_buy_base, taker_buy_quote, is_closed "
            "FROM ohlcv_candles FINAL WHERE symbol = {s:String} AND interval = '1m' ORDER BY open_time",
            parameters={"s": symbol},
        ).result_rows
    ]


def values(c: Candle) -> tuple[Any, ...]:
    return (c.open_time, c.close_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades,
            c.taker_buy_base, c.taker_buy_quote, True)  # fmt: skip


def events(ch: Client, symbol: str, kind: str) -> list[int]:
    return [
        int(r[0])
        for r in ch.query(
            "SELECT JSONExtractUInt(payload, 'segment_id') FROM ohlcv_events FINAL WHERE symbol = {s:String} "
            "AND interval = '1m' AND type = {t:String} ORDER BY seq",
            parameters={"s": symbol, "t": kind},
        ).result_rows
    ]


@pytest.fixture
def orch_client(ch_url: str, ch_db: str, ch: Client) -> Iterator[Client]:
    """The orchestrator's own client on the test database (migrated by ``ch``)."""
    client = make_client(ch_url, ch_db)
    yield client
    client.close()


# --- tier a/b: configuration, gate, lifecycle --------------------------------------------------


def test_backoff_doubles_up_to_the_cap_and_config_is_checked() -> None:
    cfg = BackfillConfig(backoff_initial_s=2, backoff_max_s=10)
    assert [cfg.backoff_s(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]
    assert BackfillConfig(markets={"XRPUSDT": "spot"}, default_market="usdm").market_of("XRPUSDT") == "spot"
    with pytest.raises(ValueError, match="concurrency"):
        BackfillConfig(concurrency=0)


def test_gate_pause_holds_every_thread_of_the_market() -> None:
    gate = RestGate(threading.Event())
    gate.hold(0.3)
    started = time.monotonic()
    with gate.slot():
        waited = time.monotonic() - started
    assert waited >= 0.29 and gate.pauses == 1


def test_segment_lifecycle_joins_the_topology_and_the_orchestrator(ch: Client) -> None:
    now = int(time.time() * 1000)
    seg = []
    for sid, state in ((60_000, "open"), (120_000, "open"), (180_000, "repaired"), (240_000, "open")):
        repaired_at = now if state == "repaired" else None
        seg.append(["XRPUSDT", "1m", sid, sid, sid, sid, 1, state, now - 1000, repaired_at, now, now])
    ch.insert("gap_segments", seg, column_names=[
        "symbol", "interval", "segment_id", "segment_end", "from_open_time", "to_open_time", "missing_bars",
        "state", "detected_at", "repaired_at", "updated_at", "version"])  # fmt: skip
    rep = [
        ["XRPUSDT", "1m", 120_000, "exchange_gap", 2, 2, 0, now - 500, None, "", "r1", now, 1],
        ["XRPUSDT", "1m", 180_000, "repairing", 1, 0, 1, now - 500, None, "", "r2", now, 1],
        ["XRPUSDT", "1m", 240_000, "failed", 3, 0, 0, now - 500, now + 9000, "boom", "r3", now, 1],
        ["XRPUSDT", "1m", 240_000, "repairing", 3, 0, 0, now - 700, None, "", "r3", now, 0],  # older version
    ]
    ch.insert("gap_repairs", rep, column_names=[
        "symbol", "interval", "segment_id", "state", "attempts", "empty_answers", "rest_bars",
        "last_attempt_at", "next_attempt_at", "last_error", "run_id", "updated_at", "version"])  # fmt: skip
    got = {s.segment_id: s for s in segment_lifecycle(ch, "XRPUSDT", "1m")}
    assert {k: v.state for k, v in got.items()} == {
        60_000: "open", 120_000: "exchange_gap", 180_000: "repaired", 240_000: "failed",
    }  # fmt: skip
    failed = got[240_000]
    assert (failed.attempts, failed.last_error, failed.next_attempt_at, failed.detected_at) == (
        3, "boom", now + 9000, now - 1000,
    )  # fmt: skip
    untouched = got[60_000]
    assert (untouched.repair_state, untouched.attempts, untouched.last_attempt_at) == ("", 0, None)
    only = segment_lifecycle(ch, "XRPUSDT", "1m", states=["open", "failed"])
    assert [s.segment_id for s in only] == [60_000, 240_000]


def test_stop_during_a_long_retry_after_is_prompt_and_costs_no_attempt(
    ch: Client, orch_client: Client
) -> None:
    assert load_files(ch, [XRP_JSON]).inserted == 61_274
    queue_missing(ch, scan(ch, "XRPUSDT", "1m", now_ms=1621023960000 + MIN))  # the two outages
    with FakeBinance(Datasets([load_freqtrade_json(XRP_JSON)])) as fake:
        fake.push_rest_fault(RestFault.too_many_requests(retry_after_s=30))
        orch = Orchestrator(
            orch_client, rest_urls={"spot": fake.urls.spot_rest}, broker_address="127.0.0.1:9",
            config=BackfillConfig(poll_interval_s=0.1, events_topic=None),  # no broker: the poll only
        )  # fmt: skip
        stop = threading.Event()
        thread = threading.Thread(target=orch.run, args=(stop,))
        thread.start()
        try:
            wait_until(lambda: [r.status for r in fake.rest_requests] == [429], 10, "the 429")
            assert orch.gates["spot"].remaining_s > 25  # every worker now waits out the Retry-After
            stopped = time.monotonic()
            stop.set()
            thread.join(10)
        finally:
            stop.set()
        assert not thread.is_alive() and time.monotonic() - stopped < 3
        assert [r.status for r in fake.rest_requests] == [429]  # nothing sent during the Retry-After
    segs = segment_lifecycle(ch, "XRPUSDT", "1m")
    assert [(s.state, s.repair_state, s.attempts) for s in segs] == [("open", "open", 0)] * 2
    runs = backfill_runs(ch, "XRPUSDT", "1m")
    assert [(r.status, r.last_error) for r in runs] == [
        ("error", "orchestrator stopped during the attempt")
    ] * 2


# --- tier c: the whole loop ---------------------------------------------------------------------


@pytest.mark.broker
def triggered_config(topics: dict[str, str], **options: Any) -> BackfillConfig:
    """An orchestrator on the test's topics whose ClickHouse poll (600 s) never comes in a test:
    what it repairs, a trigger started. (60 s came once: a loaded CI run took longer.)"""
    return BackfillConfig(default_market="usdm", raw_topic=topics["raw"], events_topic=topics["events"],
                          queue_topic=topics["gap_queue"], poll_interval_s=600.0, **options)  # fmt: skip


def start(orch: Orchestrator) -> tuple[threading.Thread, threading.Event]:
    """``orch.run`` in a thread, returned once its trigger consumer has its partitions."""
    stop = threading.Event()
    thread = threading.Thread(target=orch.run, args=(stop,), name="orchestrator")
    thread.start()
    wait_until(lambda: orch.consumer is not None and orch.consumer.ready.is_set(), 20, "the trigger consumer")
    return thread, stop


def test_a_trigger_is_read_from_a_gap_event_or_a_scan_notice_and_nothing_else() -> None:
    detected = {
        "type": "gap_detected",
        "symbol": "XRPUSDT",
        "interval": "1m",
        "seq": 9,
        "emitted_at": 5_000,
        "segment_id": 120_000,
        "from_open_time": 120_000,
        "to_open_time": 240_000,
        "missing_bars": 3,
    }
    repaired = {**detected, "type": "gap_repaired", "detected_at": 5_000, "repaired_at": 7_500}
    t = parse_trigger(CANDLE_EVENTS.name, orjson.dumps(detected))
    assert t == Trigger("gap_detected", "XRPUSDT", "1m", 120_000, 120_000, 240_000, 3, 5_000)
    r = parse_trigger(CANDLE_EVENTS.name, orjson.dumps(repaired))
    assert r is not None and (r.kind, r.key, r.detected_at, r.repaired_at) == (
        "gap_repaired", ("XRPUSDT", "1m", 120_000), 5_000, 7_500,
    )  # fmt: skip
    append = {"type": "append", "symbol": "XRPUSDT", "interval": "1m", "seq": 10, "emitted_at": 1, "count": 0,
              "candles": [], "late": False}  # fmt: skip
    assert parse_trigger(CANDLE_EVENTS.name, orjson.dumps(append)) is None
    assert parse_trigger(CANDLE_EVENTS.name, b'{"type": "gap_detected"}') is None  # no range: not a trigger
    notice = GapQueued(symbol="NEARUSDT", interval="1m", segment_id=60_000, from_open_time=60_000,
                       to_open_time=60_000, missing_bars=1, queued_at=42)  # fmt: skip
    assert parse_trigger(GAP_QUEUE.name, notice.model_dump_json().encode()) == Trigger(
        "scan", "NEARUSDT", "1m", 60_000, 60_000, 60_000, 1, 42
    )
    assert parse_trigger(GAP_QUEUE.name, b"{}") is None


@pytest.mark.broker
def test_dropped_ranges_are_repaired_on_their_gap_detected_events_without_the_poll(
    broker: str, topic_prefix: str, ch: Client, orch_client: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    source = list(vision_candles("LINKUSDT")[:1500])
    dropped = [(200, 207), (600, 660), (1100, 1250)]  # 7, 60 and 150 bars lost on our side
    topics = unique_topics(broker, topic_prefix)
    replay_to_kafka(broker, drop(source, dropped), topic=topics["raw"], source="import", market="usdm")
    group, state = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "state"
    mttr_before = metric("kline_gap_mttr_seconds_count")
    success_before = metric("ohlcv_backfill_runs_total", status="success")
    by_event_before = metric("ohlcv_backfill_dispatches_total", trigger="gap_detected")
    with FakeBinance(Datasets([load_vision_zip(VISION_DIR / "LINKUSDT-1m-2026-02.zip")])) as fake:
        orch = Orchestrator(orch_client, rest_urls={"usdm": fake.urls.usdm_rest}, broker_address=broker,
                            config=triggered_config(topics))  # fmt: skip
        thread, stop = start(orch)  # its first pass is done: the queue in ClickHouse is empty
        try:
            # the topology (main thread: it owns the signal handlers) detects the gaps; the
            # orchestrator repairs each on its gap_detected event while the topology still runs
            # (the next poll is a minute away, this test takes less)
            run_topology(broker, topics, ch_url, ch_db, state, resample=(), group=group, idle_timeout_s=6)
            wait_until(
                lambda: [s.repair_state for s in segment_lifecycle(ch, "LINKUSDT", "1m")] == ["repaired"] * 3,
                10, "the orchestrator seeing every segment repaired",
            )  # fmt: skip
        finally:
            stop.set()
            thread.join(30)
        assert not thread.is_alive()
    # the same consumer group and state again: nothing left to do, nothing re-emitted
    run_topology(broker, topics, ch_url, ch_db, state, resample=(), group=group, idle_timeout_s=3)

    assert stored(ch, "LINKUSDT") == [values(c) for c in source]
    lost = {c.open_time for i, c in enumerate(source) if any(a <= i < b for a, b in dropped)}
    sources = dict(ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), source FROM ohlcv_candles FINAL WHERE symbol = 'LINKUSDT'"
    ).result_rows)  # fmt: skip
    assert {t for t, s in sources.items() if s == "rest"} == lost
    ids = [source[a].open_time for a, _ in dropped]
    segs = segment_lifecycle(ch, "LINKUSDT", "1m")
    assert [(s.segment_id, s.state, s.topology_state, s.missing_bars) for s in segs] == [
        (i, "repaired", "repaired", 0) for i in ids
    ]
    assert events(ch, "LINKUSDT", "gap_detected") == ids
    assert sorted(events(ch, "LINKUSDT", "gap_repaired")) == ids
    seqs = ch.query(
        "SELECT min(seq), max(seq), count(), uniqExact(seq) FROM ohlcv_events WHERE symbol = 'LINKUSDT'"
    ).result_rows[0]
    assert seqs[0] == 1 and seqs[1] == seqs[2] == seqs[3]
    runs = backfill_runs(ch, "LINKUSDT", "1m")
    assert sorted((r.segment_id, r.status, r.expected_bars, r.loaded_bars, r.attempts) for r in runs) == [
        (i, "success", b - a, b - a, 1) for i, (a, b) in zip(ids, dropped, strict=True)
    ]
    assert metric("kline_gap_mttr_seconds_count") - mttr_before == 3
    assert metric("ohlcv_backfill_runs_total", status="success") - success_before == 3
    assert metric("ohlcv_backfill_queue_size") == 0
    # every attempt was started by its segment's event, none by a read of the ClickHouse queue
    assert orch.dispatched_by == {("LINKUSDT", "1m", i): "gap_detected" for i in ids}
    assert metric("ohlcv_backfill_dispatches_total", trigger="gap_detected") - by_event_before == 3
    # how long detection -> repair takes is measured by bench/gap_repair.py, not asserted here


@pytest.mark.broker
def test_exchange_outages_end_as_exchange_gaps_after_bounded_attempts(
    broker: str, topic_prefix: str, ch: Client, orch_client: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    # the XRP dump around both real outages; we also lose the 20 bars before outage 1 ourselves,
    # so its segment mixes our loss (REST has it) with the exchange's (REST has nothing)
    part = [c for c in xrp_candles() if OUT1[0] - 200 * MIN <= c.open_time <= OUT2[1] + 200 * MIN]
    ours = [i for i, c in enumerate(part) if OUT1[0] - 20 * MIN <= c.open_time < OUT1[0]]
    topics = unique_topics(broker, topic_prefix)
    replay_to_kafka(broker, drop(part, [(ours[0], ours[-1] + 1)]), topic=topics["raw"], source="import")
    group, state = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "state"
    run_topology(broker, topics, ch_url, ch_db, state, resample=(), group=group, idle_timeout_s=3)
    first = OUT1[0] - 20 * MIN
    detected = segment_lifecycle(ch, "XRPUSDT", "1m")
    assert [(s.segment_id, s.from_open_time, s.missing_bars) for s in detected] == [
        (first, first, 170), (OUT2[0], OUT2[0], 283),
    ]  # fmt: skip
    mttr_before = metric("kline_gap_mttr_seconds_count")
    with FakeBinance(Datasets([load_freqtrade_json(XRP_JSON)])) as fake:
        cfg = BackfillConfig(default_market="spot", raw_topic=topics["raw"], empty_recheck_s=0.5)
        with Orchestrator(orch_client, rest_urls={"spot": fake.urls.spot_rest}, broker_address=broker,
                          config=cfg) as orch:  # fmt: skip
            poll = orch.run_once()
            # most missing bars first
            assert poll.dispatched == (("XRPUSDT", "1m", OUT2[0]), ("XRPUSDT", "1m", first))
            after = {s.segment_id: s for s in segment_lifecycle(ch, "XRPUSDT", "1m")}
            assert (after[first].state, after[first].rest_bars) == ("repairing", 20)
            assert (after[OUT2[0]].state, after[OUT2[0]].empty_answers) == ("open", 1)  # one empty answer
            # the topology stores our 20 bars and shrinks the segment to the exchange's outage
            run_topology(broker, topics, ch_url, ch_db, state, resample=(), group=group, idle_timeout_s=3)

            def settled() -> bool:
                orch.run_once()
                return [s.state for s in segment_lifecycle(ch, "XRPUSDT", "1m")] == ["exchange_gap"] * 2

            wait_until(settled, 15, "both outages classified as exchange gaps")
            requests = len(fake.rest_requests)
            for _ in range(3):
                time.sleep(cfg.empty_recheck_s)
                assert orch.run_once().dispatched == ()
            assert len(fake.rest_requests) == requests == 4  # 2 attempts per outage, then never again
    segs = segment_lifecycle(ch, "XRPUSDT", "1m")
    assert [(s.segment_id, s.from_open_time, s.to_open_time, s.missing_bars) for s in segs] == [
        (first, OUT1[0], OUT1[1], 150), (OUT2[0], OUT2[0], OUT2[1], 283),
    ]  # fmt: skip
    assert [(s.state, s.topology_state, s.attempts, s.empty_answers) for s in segs] == [
        ("exchange_gap", "open", 2, 2), ("exchange_gap", "open", 2, 2),
    ]  # fmt: skip
    runs = sorted((r.segment_id, r.attempts, r.status, r.loaded_bars) for r in backfill_runs(ch, "XRPUSDT"))
    assert runs == [(first, 1, "partial", 20), (first, 2, "partial", 0),
                    (OUT2[0], 1, "partial", 0), (OUT2[0], 2, "partial", 0)]  # fmt: skip
    # our 20 bars are back (from REST), the exchange's holes stay holes; nothing was repaired
    assert [r[0] for r in stored(ch, "XRPUSDT")] == [c.open_time for c in part]
    assert events(ch, "XRPUSDT", "gap_repaired") == []
    assert metric("kline_gap_mttr_seconds_count") == mttr_before
    assert metric("ohlcv_backfill_queue_size") == 0


@pytest.mark.broker
def test_429_storm_and_418_ban_slow_the_orchestrator_and_lose_nothing(
    broker: str, topic_prefix: str, ch: Client, orch_client: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    source = list(vision_candles("AVAXUSDT")[:1000])
    dropped = [(100, 110), (300, 340), (500, 505), (800, 900)]
    topics = unique_topics(broker, topic_prefix)
    replay_to_kafka(broker, drop(source, dropped), topic=topics["raw"], source="import", market="usdm")
    group, state = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "state"
    run_topology(broker, topics, ch_url, ch_db, state, resample=(), group=group, idle_timeout_s=3)
    assert len(segment_lifecycle(ch, "AVAXUSDT", "1m", states=["open"])) == 4
    retries_before = metric("ohlcv_backfill_retries_total")
    errors_before = metric("ohlcv_backfill_runs_total", status="error")
    with FakeBinance(Datasets([load_vision_zip(VISION_DIR / "AVAXUSDT-1m-2026-02.zip")]), ban_s=2) as fake:
        # three 429s (Retry-After 1 s: the client waits them out), then a 418 ban of 2 s, longer
        # than this client waits (max_ban_wait_s=1): that attempt fails and is retried later
        fake.push_rest_fault(*(RestFault.too_many_requests(retry_after_s=1) for _ in range(3)))
        fake.push_rest_fault(RestFault.banned(retry_after_s=2))
        cfg = BackfillConfig(default_market="usdm", raw_topic=topics["raw"], backoff_initial_s=0.5)
        with Orchestrator(orch_client, rest_urls={"usdm": fake.urls.usdm_rest}, broker_address=broker,
                          config=cfg, rest_options={"max_ban_wait_s": 1.0}) as orch:  # fmt: skip
            started = time.monotonic()
            first = orch.run_once()
            assert len(first.dispatched) == 4
            failed = segment_lifecycle(ch, "AVAXUSDT", "1m", states=["failed"])
            assert len(failed) == 1 and "banned" in failed[0].last_error
            wait_until(lambda: orch.run_once().dispatched != (), 10, "the banned segment's retry")
            slowed_s = time.monotonic() - started
            stats, gate = orch.rest["usdm"].stats, orch.gates["usdm"]
            assert (stats.rate_limited, stats.banned) == (3, 1)
            assert stats.backoff_s >= 2.9 and gate.paused_s >= 4.9 and slowed_s >= 4.9
            log = fake.rest_requests
            assert [r.status for r in log].count(429) == 3 and [r.status for r in log].count(418) == 1
            for prev, nxt in itertools.pairwise(log):
                wait_s = {429: 1.0, 418: 2.0}.get(prev.status, 0.0)
                assert nxt.at - prev.at >= wait_s - 0.05, "a request went out during a Retry-After"
            run_topology(broker, topics, ch_url, ch_db, state, resample=(), group=group, idle_timeout_s=3)
            wait_until(
                lambda: orch.run_once() is not None
                and [s.repair_state for s in segment_lifecycle(ch, "AVAXUSDT", "1m")] == ["repaired"] * 4,
                10, "every segment repaired",
            )  # fmt: skip
    print(f"429 x3 + 418 ban: repair attempts took {slowed_s:.1f}s, client backoff {stats.backoff_s:.1f}s, "
          f"gate paused {gate.paused_s:.1f}s")  # fmt: skip
    assert stored(ch, "AVAXUSDT") == [values(c) for c in source]
    assert metric("ohlcv_backfill_retries_total") - retries_before == 1
    assert metric("ohlcv_backfill_runs_total", status="error") - errors_before == 1
    runs = backfill_runs(ch, "AVAXUSDT", "1m")
    assert sorted(r.status for r in runs) == ["error", "success", "success", "success", "success"]
    assert max(r.attempts for r in runs) == 2


@pytest.mark.broker
def test_a_hole_found_by_a_scan_is_queued_repaired_and_closed_by_the_topology(
    broker: str, topic_prefix: str, ch: Client, orch_client: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    # history bulk-loaded straight into ClickHouse (no topology saw it) with 30 bars missing
    source = list(vision_candles("NEARUSDT")[:600])
    assert insert_candles(ch, drop(source, [(250, 280)])) == 570
    queued = queue_missing(ch, scan(ch, "NEARUSDT", "1m"))
    hole = source[250].open_time
    assert [(m.from_open_time, m.missing_bars) for m in queued.opened] == [(hole, 30)]
    topics = unique_topics(broker, topic_prefix)
    with FakeBinance(Datasets([load_vision_zip(VISION_DIR / "NEARUSDT-1m-2026-02.zip")])) as fake:
        cfg = BackfillConfig(default_market="usdm", raw_topic=topics["raw"])
        with Orchestrator(orch_client, rest_urls={"usdm": fake.urls.usdm_rest}, broker_address=broker,
                          config=cfg) as orch:  # fmt: skip
            assert orch.run_once().dispatched == (("NEARUSDT", "1m", hole),)
            # a topology starting now re-seeds the scan's segment from ClickHouse and closes it
            run_topology(broker, topics, ch_url, ch_db, tmp_path / "state", resample=(), idle_timeout_s=3)
            orch.run_once()
    assert stored(ch, "NEARUSDT") == [values(c) for c in source]
    [seg] = segment_lifecycle(ch, "NEARUSDT", "1m")
    assert (seg.segment_id, seg.state, seg.topology_state, seg.repair_state) == (
        hole, "repaired", "repaired", "repaired",
    )  # fmt: skip
    assert events(ch, "NEARUSDT", "gap_repaired") == [hole]
    assert [(r.status, r.loaded_bars) for r in backfill_runs(ch, "NEARUSDT")] == [("success", 30)]
    assert scan(ch, "NEARUSDT", "1m").missing == ()


@pytest.mark.broker
def test_a_hole_a_scan_opens_on_a_running_stack_is_repaired_on_its_notice(
    broker: str, topic_prefix: str, ch: Client, orch_client: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    # history bulk-loaded (no topology saw it) with 30 bars missing; the live stream goes on
    source = list(vision_candles("NEARUSDT")[:700])
    assert insert_candles(ch, drop(source[:600], [(250, 280)])) == 570
    hole, key = source[250].open_time, ("NEARUSDT", "1m", source[250].open_time)
    topics = unique_topics(broker, topic_prefix)
    replay_to_kafka(broker, source[600:], topic=topics["raw"], source="import", market="usdm")
    scanned: dict[str, Any] = {}

    def scan_when_running() -> None:
        """``ohlcv scan --queue-missing`` on the running stack: the topology has seeded the stream
        (its first live candles are stored) before the scan opens the segment."""
        client = make_client(ch_url, ch_db)
        try:
            wait_until(lambda: len(stored(client, "NEARUSDT")) > 570, 30, "the topology storing live candles")
            queued = queue_missing(client, scan(client, "NEARUSDT", "1m"))
            scanned["segments"] = queued.segments()
            scanned["at"] = time.monotonic()
            assert GapNotifier(broker, cfg.queue_topic).notify("NEARUSDT", "1m", queued.segments()) == 1

            def closed() -> bool:
                return [s.state for s in segment_lifecycle(client, "NEARUSDT", "1m")] == ["repaired"]

            wait_until(closed, 30, "the scan's segment repaired")
            scanned["took_s"] = time.monotonic() - scanned["at"]
        finally:
            client.close()

    with FakeBinance(Datasets([load_vision_zip(VISION_DIR / "NEARUSDT-1m-2026-02.zip")])) as fake:
        cfg = triggered_config(topics)
        orch = Orchestrator(orch_client, rest_urls={"usdm": fake.urls.usdm_rest}, broker_address=broker,
                            config=cfg)  # fmt: skip
        thread, stop = start(orch)
        scanner = threading.Thread(target=scan_when_running, name="scan")
        scanner.start()
        try:
            run_topology(broker, topics, ch_url, ch_db, tmp_path / "state", resample=(), idle_timeout_s=6)
            scanner.join(40)
        finally:
            stop.set()
            thread.join(30)
    assert scanned["segments"] == [(hole, hole, source[279].open_time, 30)]
    assert scanned["took_s"] < 10  # the next poll would be a minute after the orchestrator started
    assert orch.dispatched_by == {key: "scan"}
    assert stored(ch, "NEARUSDT") == [values(c) for c in source]
    [seg] = segment_lifecycle(ch, "NEARUSDT", "1m")
    # the running topology never held the segment (it seeds open segments at a stream's first
    # record), so the orchestrator closes it once every bar is stored; no gap_repaired event
    assert (seg.segment_id, seg.state, seg.topology_state, seg.repair_state) == (
        hole, "repaired", "open", "repaired",
    )  # fmt: skip
    assert events(ch, "NEARUSDT", "gap_repaired") == []
    assert [(r.status, r.loaded_bars) for r in backfill_runs(ch, "NEARUSDT")] == [("success", 30)]
    assert scan(ch, "NEARUSDT", "1m").missing == ()


def collect_triggers(broker: str, topics: dict[str, str]) -> tuple[TriggerConsumer, list[Trigger]]:
    """The orchestrator's trigger consumer on ``topics``, collecting what it reads."""
    got: list[Trigger] = []
    consumer = TriggerConsumer(
        broker, got.extend, events_topic=topics["events"], queue_topic=topics["gap_queue"]
    )
    consumer.start()
    wait_until(consumer.ready.is_set, 20, "the trigger consumer")
    return consumer, got


@pytest.mark.broker
def test_the_scheduled_scan_announces_the_segments_it_opens(
    broker: str, topic_prefix: str, ch: Client
) -> None:
    assert load_files(ch, [XRP_JSON]).inserted == 61_274
    topics = unique_topics(broker, topic_prefix)
    consumer, got = collect_triggers(broker, topics)
    notifier = GapNotifier(broker, topics["gap_queue"])

    def announce(symbol: str, interval: str, queued: QueueResult) -> None:  # as ohlcv.services wires it
        notifier.notify(symbol, interval, queued.segments())

    scheduler = ContinuityScheduler(ch, [("XRPUSDT", "1m")], windows_days=(365,), queue_missing=True,
                                    clock_ms=lambda: 1621023960000 + MIN, on_queued=announce)  # fmt: skip
    try:
        scheduler.scan_all()
        wait_until(lambda: len(got) == 2, 10, "the scan's two notices")
        scheduler.scan_all()  # nothing new is opened, nothing announced
        time.sleep(0.5)
    finally:
        consumer.stop()
    assert [(t.kind, t.segment_id, t.from_open_time, t.to_open_time, t.missing_bars) for t in got] == [
        ("scan", a, a, b, n) for a, b, n in (OUT1, OUT2)
    ]
    assert [s.segment_id for s in segment_lifecycle(ch, "XRPUSDT", "1m")] == [OUT1[0], OUT2[0]]


@pytest.mark.broker
def test_ohlcv_scan_queue_missing_announces_to_a_running_stack(
    broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    """``ohlcv scan --queue-missing`` in its own process (a ClickHouse server's deployment: chDB
    allows one process per path) tells the orchestrator of the stack on KAFKA_BROKER_ADDRESS."""
    ensure_topics(broker, (GAP_QUEUE,))  # the CLI announces on the real name
    events = unique_topics(broker, topic_prefix)["events"]
    consumer, got = collect_triggers(broker, {"events": events, "gap_queue": GAP_QUEUE.name})
    ohlcv = Path(sys.executable).parent / "ohlcv"
    ours = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update({"DATA_DIR": str(tmp_path / "data"), "CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}",
                "SYMBOLS": "XRPUSDT", "INTERVALS": "1m", "KAFKA_BROKER_ADDRESS": broker})  # fmt: skip
    try:
        for args in (["import", str(XRP_JSON), "--mode", "bulk"],
                     ["scan", "--interval", "1m", "--days", "2500", "--queue-missing"]):  # fmt: skip
            done = subprocess.run([str(ohlcv), *args], check=False, cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            assert done.returncode == 0, done.stderr
        wait_until(lambda: len([t for t in got if t.symbol == "XRPUSDT"]) == 2, 10, "the CLI's two notices")
    finally:
        consumer.stop()
    assert [(t.kind, t.segment_id, t.missing_bars) for t in got if t.symbol == "XRPUSDT"] == [
        ("scan", OUT1[0], 150),
        ("scan", OUT2[0], 283),
    ]


@pytest.mark.broker
def test_an_event_alone_starts_a_fetch_and_a_settled_segment_is_not_tried_again(
    broker: str, topic_prefix: str, ch: Client, orch_client: Client
) -> None:
    source = list(vision_candles("NEARUSDT")[:100])
    now = int(time.time() * 1000)
    # an exchange gap settled earlier, detected again (a replay after a crash re-detects segments)
    settled = source[10].open_time
    ch.insert("gap_segments", [["NEARUSDT", "1m", settled, settled + 4 * MIN, settled, settled + 4 * MIN, 5,
                                "open", now - 9000, None, now, now]], column_names=[
        "symbol", "interval", "segment_id", "segment_end", "from_open_time", "to_open_time", "missing_bars",
        "state", "detected_at", "repaired_at", "updated_at", "version"])  # fmt: skip
    ch.insert("gap_repairs", [["NEARUSDT", "1m", settled, "exchange_gap", 2, 2, 0, now - 5000, None, "", "r0",
                               now, 1]], column_names=[
        "symbol", "interval", "segment_id", "state", "attempts", "empty_answers", "rest_bars",
        "last_attempt_at", "next_attempt_at", "last_error", "run_id", "updated_at", "version"])  # fmt: skip
    # a segment only the event knows yet (its row comes with the topology's next checkpoint)
    new, to = source[50].open_time, source[59].open_time
    topics = unique_topics(broker, topic_prefix)
    with (
        FakeBinance(Datasets([load_vision_zip(VISION_DIR / "NEARUSDT-1m-2026-02.zip")])) as fake,
        Orchestrator(orch_client, rest_urls={"usdm": fake.urls.usdm_rest}, broker_address=broker,
                     config=triggered_config(topics)) as orch,
    ):  # fmt: skip
        orch.trigger([
            Trigger("gap_detected", "NEARUSDT", "1m", settled, settled, settled + 4 * MIN, 5, now),
            Trigger("gap_detected", "NEARUSDT", "1m", new, new, to, 10, now),
            Trigger("gap_detected", "NEARUSDT", "5m", new, new, new, 1, now),  # rebuilt by the resampler
        ])  # fmt: skip
        poll = orch.run_once()
        assert orch.run_once().dispatched == ()  # the hint is spent: the attempt waits for the topology
        assert [r.status for r in fake.rest_requests] == [200]
    assert poll.dispatched == (("NEARUSDT", "1m", new),)
    assert orch.dispatched_by == {("NEARUSDT", "1m", new): "gap_detected"}
    [run] = backfill_runs(ch, "NEARUSDT")
    assert (run.segment_id, run.from_open_time, run.to_open_time, run.expected_bars, run.loaded_bars) == (
        new, new, to, 10, 10,
    )  # fmt: skip
    assert [(s.segment_id, s.state) for s in segment_lifecycle(ch, "NEARUSDT", "1m")] == [
        (settled, "exchange_gap")
    ]
