"""The features topology on the embedded broker, writing to real chDB, against the batch
reference (``indicators.batch``) over the candles the candle topology stored."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import REGISTRY

from schemas.features import FeatureRow
from schemas.topics import FEATURES
from sinks.clickhouse_bulk import insert_candles
from tests.topologies.feature_helpers import assert_exact
from tests.topologies.helpers import xrp_candles
from tests.topologies.pipeline import produce, run_topology, unique_topics

MIN = 60_000
#: both real outages of the dump (150 and 283 missing bars), a day of market around them
FIRST_HOLE = (1618883940000 + MIN, 150)
WINDOW = (1618790400000, 1619402400000)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def consume_all(broker: str, topic: str, expect: int) -> list[dict[str, Any]]:
    c = Consumer({"bootstrap.servers": broker, "group.id": f"read-{topic}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(FEATURES.partitions)])
    out: list[dict[str, Any]] = []
    idle = 0
    while len(out) < expect and idle < 20:
        msgs = c.consume(5000, 0.5)
        idle = 0 if msgs else idle + 1
        out.extend(orjson.loads(m.value()) for m in msgs if m.error() is None)
    c.close()
    return out


@pytest.mark.broker
def test_features_of_the_real_dump_equal_the_batch_reference_then_follow_a_repair_and_a_filled_outage(
    broker: str, topic_prefix: str, ch: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    topics = unique_topics(broker, topic_prefix)
    candles = [c for c in xrp_candles() if WINDOW[0] <= c.open_time < WINDOW[1]]
    produce(broker, topics["raw"], candles)
    emitted_before, repaired_before, started = (
        metric("feature_rows_emitted_total", interval="1m"),
        metric("feature_recomputed_total", reason="repair"),
        time.time(),
    )
    group = "g-features"
    run_topology(broker, topics, ch_url, ch_db, tmp_path / "state", resample=("5m",), group=group,
                 features=True)  # fmt: skip

    rows = assert_exact(ch, "1m")
    rows_5m = assert_exact(ch, "5m")
    by_t = {r["open_time"]: r for r in rows}
    # the rows right after each real outage: nothing computed across the hole
    for start, missing in (FIRST_HOLE, (1619323260000 + MIN, 283)):
        after = by_t[start + missing * MIN]
        assert after["window_complete"] is False
        assert after["bars_missing_in_window"] == 49
        assert after["ret_1"] is None and after["rsi_14"] is None and after["range_pct"] is not None
        assert by_t[start + (missing + 49) * MIN]["window_complete"] is True
    assert {r["feature_version"] for r in rows} == {1} and {r["reason"] for r in rows} == {"new"}
    assert metric("feature_rows_emitted_total", interval="1m") - emitted_before == len(rows)
    assert metric("feature_scheduler_last_success_timestamp") >= started
    assert 0 <= metric("feature_scheduler_lag_seconds") < 60

    # every row is on ohlcv.features too, in the published contract
    published = consume_all(broker, topics["features"], len(rows) + len(rows_5m))
    ones = [p for p in published if p["interval"] == "1m"]
    assert sorted(p["open_time"] for p in ones) == sorted(by_t)
    for p in published[:200]:
        FeatureRow.model_validate(p)

    # history changes: a revised candle, and the first outage filled late by a REST page (the
    # values are injected: the exchange has none for the outage)
    mid = candles[300]  # in the run before the first outage
    revised = dataclasses.replace(mid, close=mid.close * 1.01, high=max(mid.high, mid.close * 1.01),
                                  source="rest")  # fmt: skip
    prev = next(c for c in reversed(candles) if c.open_time < FIRST_HOLE[0])
    fill = [
        dataclasses.replace(
            prev,
            open_time=t,
            close_time=t + MIN - 1,
            open=prev.close,
            high=prev.close,
            low=prev.close,
            volume=0.0,
            source="rest",
        )
        for t in range(FIRST_HOLE[0], FIRST_HOLE[0] + FIRST_HOLE[1] * MIN, MIN)
    ]
    produce(broker, topics["raw"], [revised], source="rest")
    produce(broker, topics["raw"], fill, source="rest", batch=500)
    # a restart of the process: the state re-seeds from feature_snapshots
    run_topology(broker, topics, ch_url, ch_db, tmp_path / "state", resample=("5m",), group=group,
                 features=True)  # fmt: skip

    changed = {revised.open_time} | {c.open_time for c in fill}
    rows = assert_exact(ch, "1m", changed)
    by_t = {r["open_time"]: r for r in rows}
    assert by_t[revised.open_time]["feature_version"] == 2
    assert by_t[revised.open_time]["reason"] == "repair"
    assert metric("feature_recomputed_total", reason="repair") - repaired_before >= 50
    assert by_t[revised.open_time + MIN]["reason"] == "repair"
    assert by_t[fill[0].open_time]["feature_version"] == 1
    # the joined run: every bar after the filled hole up to the second outage derived again
    after_fill = by_t[FIRST_HOLE[0] + FIRST_HOLE[1] * MIN]
    assert after_fill["feature_version"] == 2 and after_fill["window_complete"] is True
    assert after_fill["reason"] in ("late_fill", "gap_repaired")
    assert by_t[candles[100].open_time]["feature_version"] == 1  # before the revised bar
    assert by_t[mid.open_time + 300 * MIN]["feature_version"] == 2  # its run, carried forward
    # the 5m bars the changes reached: repaired buckets, or buckets the fill brought late
    assert_exact(ch, "5m", {t - t % (5 * MIN) for t in changed})


@pytest.mark.broker
def test_live_candles_after_bulk_loaded_history_continue_from_rows_the_seed_derives_first(
    broker: str, ch: Client, ch_url: str, ch_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    """History bulk-loaded straight into ClickHouse has no events and no feature rows; the
    features state's first seed derives them (the feature rebuild), so the first live rows are
    exact, not the start of a fresh run."""
    candles = [c for c in xrp_candles() if WINDOW[0] <= c.open_time < WINDOW[1]]
    history, live = candles[:-120], candles[-120:]
    insert_candles(ch, history)
    topics = unique_topics(broker, topic_prefix)
    produce(broker, topics["raw"], live)
    catch_ups = metric("feature_history_reads_total", why="catch_up")
    run_topology(broker, topics, ch_url, ch_db, tmp_path / "state", resample=(), features=True)
    rows = assert_exact(ch, "1m")
    assert metric("feature_history_reads_total", why="catch_up") - catch_ups == 1
    by_t = {r["open_time"]: r for r in rows}
    assert {by_t[c.open_time]["reason"] for c in history} == {"rebuild"}
    assert {by_t[c.open_time]["reason"] for c in live} == {"new"}
    first_live = by_t[live[0].open_time]
    assert first_live["window_complete"] and first_live["ema_26"] is not None
