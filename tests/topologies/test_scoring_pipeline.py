"""The scoring topology on the embedded broker and real chDB: real XRP feature rows scored by
the production model, equal to CatBoost's own batch predict on the same rows, gap flags carried,
re-scored after a repair, and a promotion picked up while it runs; the same scores inline in the
features step (``ohlcv up``)."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from catboost import CatBoostClassifier
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer

from indicators.definitions import FEATURE_NAMES
from ohlcv.infra.clickhouse import make_client
from registry.store import Registry
from schemas.events import candle_out
from schemas.scores import ScoreRow
from sinks.features import write_features
from tests.topologies.helpers import PlainState, xrp_candles
from tests.topologies.pipeline import unique_topics
from tests.topologies.test_features_pipeline import consume_all
from topologies.feature_logic import FeatureStream
from topologies.news_features import NewsBook
from topologies.runner import TopologyConfig, build_features_application, build_scoring_application
from training.train import TrainConfig, train_model

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse, pytest.mark.slow]
KEY = "XRPUSDT:1m"


def _rows(fs: FeatureStream, state: PlainState, cs: list[Any]) -> list[dict[str, Any]]:
    out = []
    for at in range(0, len(cs), 1000):
        out += fs.apply_many(cs[at : at + 1000], ["new"] * len(cs[at : at + 1000]), state)
    for r in out:
        r["event_seq"], r["emitted_at"] = 1, 1_700_000_000_000
    NewsBook().annotate(out)  # no news: the columns say so
    return [dict(r) for r in out]


def _produce(broker: str, topic: str, rows: list[dict[str, Any]]) -> None:
    p = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    for r in rows:
        p.produce(topic, key=KEY, value=orjson.dumps(r))
        p.poll(0)
    p.flush(30)


def _batch_probabilities(reg: Registry, model_id: str, rows: list[dict[str, Any]]) -> np.ndarray:
    """The reference: CatBoost's batch predict over the rows' feature matrix."""
    m = CatBoostClassifier()
    m.load_model(blob=reg.artifact_bytes(reg.model(model_id)))
    x = np.array([[np.nan if r[n] is None else r[n] for n in FEATURE_NAMES] for r in rows])
    return np.asarray(m.predict_proba(x)[:, 1])


def test_rows_are_scored_by_the_production_model_rescored_on_repair_and_switch_on_promotion(
    broker: str, topic_prefix: str, ch: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    cs = xrp_candles()
    fs, state = FeatureStream(), PlainState()
    history = _rows(fs, state, cs[:30_000])
    write_features(ch, history)
    reg = Registry(ch)
    fast = {"iterations": 30, "depth": 4, "learning_rate": 0.1}
    a = train_model(ch, "XRPUSDT", "1m", artifact_dir=tmp_path / "m", thread_count=2,
                    config=TrainConfig(params={**fast, "random_seed": 1}))  # fmt: skip
    b = train_model(ch, "XRPUSDT", "1m", artifact_dir=tmp_path / "m", thread_count=2,
                    config=TrainConfig(params={**fast, "random_seed": 2, "depth": 3}))  # fmt: skip
    reg.promote(a.model_id)

    # phase 1: 1500 new rows, then a
    # repair of one bar, which re-derives its row and the rows after it (feature_version 2)
    live = _rows(fs, state, cs[30_000:31_500])
    revised = dataclasses.replace(cs[31_450], close=cs[31_450].close * 1.002, high=cs[31_450].high * 1.002)
    rescored = fs.apply(revised, "repair", state)
    assert isinstance(rescored, list) and len(rescored) == 50
    for r in rescored:
        r["event_seq"], r["emitted_at"] = 2, 1_700_000_000_001
    phase1 = live + [dict(r) for r in rescored]
    # phase 2, after b is promoted while the scorer runs: the next 500 rows
    phase2 = _rows(fs, state, cs[31_500:32_000])

    topics = unique_topics(broker, topic_prefix)
    cfg = TopologyConfig(
        broker_address=broker, clickhouse_url=ch_url, clickhouse_database=ch_db,
        consumer_group=f"g-{uuid.uuid4().hex[:8]}", state_dir=tmp_path / "state", embedded_broker=True,
        features_topic=topics["features"], scores_topic=topics["scores"], model_poll_s=0.3,
    )  # fmt: skip
    _produce(broker, topics["features"], phase1)
    errors: list[BaseException] = []

    def promote_then_produce() -> None:
        try:
            watch = make_client(ch_url, ch_db)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                n = watch.query("SELECT count() FROM model_inference_log FINAL").result_rows[0][0]
                if n >= len(phase1):
                    break
                time.sleep(0.2)
            Registry(watch).promote(b.model_id)
            time.sleep(1.0)  # > model_poll_s: the scorer has read the registry again
            _produce(broker, topics["features"], phase2)
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=promote_then_produce, daemon=True)
    th.start()
    build_scoring_application(cfg).run(timeout=8)
    th.join(30)
    assert not errors, errors

    got = ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), score_version, model_id, probability, decision, "
        "window_complete, window_has_repair, bars_missing_in_window, reason FROM model_inference_log FINAL "
        "ORDER BY open_time, score_version"
    ).result_rows
    by_key = {(r[0], r[1]): r for r in got}
    assert len(by_key) == len(phase1) + len(phase2)
    for phase, model_id in ((phase1, a.model_id), (phase2, b.model_id)):
        want = _batch_probabilities(reg, model_id, phase)
        for row, p in zip(phase, want.tolist(), strict=True):
            s = by_key[(row["open_time"], row["feature_version"])]
            assert s[2] == model_id
            assert s[3] == pytest.approx(p, rel=1e-12, abs=1e-15)
            assert s[4] == (s[3] >= 0.5)
            assert s[5:9] == (row["window_complete"], row["window_has_repair"], row["bars_missing_in_window"],
                              row["reason"])  # fmt: skip
    # the repaired bar's window: scored twice, flagged, and in the score_revised view
    assert {r["window_has_repair"] for r in rescored} == {True}
    revised_rows = ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), scores, last_version FROM score_revised ORDER BY open_time"
    ).result_rows
    assert revised_rows == [(r["open_time"], 2, 2) for r in rescored]
    # every score is on ohlcv.scores in the published contract
    published = consume_all(broker, topics["scores"], len(by_key))
    assert len({(p["open_time"], p["score_version"]) for p in published}) == len(by_key)
    ScoreRow.model_validate(published[0])
    ScoreRow.model_validate(published[-1])


def test_without_a_production_model_rows_are_passed_over_and_counted(
    broker: str, topic_prefix: str, ch: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value("inference_unscored_total", {"reason": "no_production_model"}) or 0.0
    fs, state = FeatureStream(), PlainState()
    rows = _rows(fs, state, xrp_candles()[:300])
    topics = unique_topics(broker, topic_prefix)
    _produce(broker, topics["features"], rows)
    cfg = TopologyConfig(
        broker_address=broker, clickhouse_url=ch_url, clickhouse_database=ch_db,
        consumer_group=f"g-{uuid.uuid4().hex[:8]}", state_dir=tmp_path / "state", embedded_broker=True,
        features_topic=topics["features"], scores_topic=topics["scores"], model_poll_s=0.3,
    )  # fmt: skip
    build_scoring_application(cfg).run(timeout=4)
    assert ch.query("SELECT count() FROM model_inference_log").result_rows[0][0] == 0
    after = REGISTRY.get_sample_value("inference_unscored_total", {"reason": "no_production_model"}) or 0.0
    assert after - before == len(rows)


def _event(seq: int, typ: str, cs: list[Any]) -> bytes:
    """A candle event as the candle topology publishes it: an ``append`` of ``cs``, or a
    ``repair`` (revision 1) of ``cs[0]``."""
    body: dict[str, Any] = {"type": typ, "symbol": "XRPUSDT", "interval": "1m", "seq": seq,
                            "emitted_at": 1_700_000_000_000}  # fmt: skip
    if typ == "append":
        body |= {"count": len(cs), "candles": [candle_out(c) for c in cs], "late": False}
    else:
        body["candle"] = candle_out(cs[0], 1)
    return orjson.dumps(body)


def test_inline_scoring_in_the_features_step_equals_catboost_batch_predict_on_pages_bars_and_repairs(
    broker: str, topic_prefix: str, ch: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    """``ohlcv up`` scores rows inside the features step (no hop through ohlcv.features): a
    page of 500 new bars (scored as one matrix by CatBoost), 60 bars one event each (the numpy
    trees), and a repair that re-derives 50 rows (a page again): every score equals CatBoost's
    batch predict over the expected feature rows, versions included, and each is on the
    scores topic and in model_inference_log beside its feature row."""
    cs = xrp_candles()
    fs, state = FeatureStream(), PlainState()
    write_features(ch, _rows(fs, state, cs[:30_000]))
    model = train_model(ch, "XRPUSDT", "1m", artifact_dir=tmp_path / "m", thread_count=2,
                        config=TrainConfig(params={"iterations": 30, "depth": 4, "learning_rate": 0.1,
                                                   "random_seed": 1}))  # fmt: skip
    reg = Registry(ch)
    reg.promote(model.model_id)
    # the expected feature rows (the features stage's exactness is tested against pandas
    # elsewhere; here they are the scorer's input)
    page = _rows(fs, state, cs[30_000:30_500])
    singles = _rows(fs, state, cs[30_500:30_560])
    revised = dataclasses.replace(cs[30_530], close=cs[30_530].close * 1.002, high=cs[30_530].high * 1.002)
    rescored = [dict(r) for r in fs.apply(revised, "repair", state)]  # type: ignore[union-attr]
    assert len(rescored) == 30  # the repaired bar to the newest one
    topics = unique_topics(broker, topic_prefix)
    p = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    events = [_event(1, "append", cs[30_000:30_500])]
    events += [_event(2 + i, "append", [c]) for i, c in enumerate(cs[30_500:30_560])]
    events.append(_event(62, "repair", [revised]))
    for e in events:
        p.produce(topics["events"], key=KEY, value=e)
    p.flush(30)
    cfg = TopologyConfig(
        broker_address=broker, clickhouse_url=ch_url, clickhouse_database=ch_db,
        consumer_group=f"g-{uuid.uuid4().hex[:8]}", state_dir=tmp_path / "state", embedded_broker=True,
        events_topic=topics["events"], features_topic=topics["features"], scores_topic=topics["scores"],
        model_poll_s=0.3,
    )  # fmt: skip
    build_features_application(cfg, score_inline=True).run(timeout=6)

    got = ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), score_version, model_id, probability, decision, "
        "window_complete, window_has_repair, bars_missing_in_window, reason, event_seq "
        "FROM model_inference_log FINAL"
        " WHERE open_time >= fromUnixTimestamp64Milli(toInt64({t:Int64}), 'UTC')"
        " ORDER BY open_time, score_version", parameters={"t": cs[30_000].open_time},
    ).result_rows  # fmt: skip
    by_key = {(r[0], r[1]): r for r in got}
    expected = page + singles + rescored
    assert len(by_key) == len(got) == len(expected) == 590
    want = _batch_probabilities(reg, model.model_id, expected)
    for row, p_ref in zip(expected, want.tolist(), strict=True):
        s = by_key[(row["open_time"], row["feature_version"])]
        assert s[2] == model.model_id
        assert s[3] == pytest.approx(p_ref, rel=1e-12, abs=1e-15)
        assert s[4] == (s[3] >= 0.5)
        assert s[5:9] == (row["window_complete"], row["window_has_repair"], row["bars_missing_in_window"],
                          row["reason"])  # fmt: skip
    assert {by_key[(r["open_time"], 2)][9] for r in rescored} == {62}  # the repair event's seq
    # the feature rows are stored and published as without inline scoring
    stored = ch.query(
        "SELECT count() FROM feature_snapshots FINAL WHERE open_time >= fromUnixTimestamp64Milli("
        "toInt64({t:Int64}), 'UTC')", parameters={"t": cs[30_000].open_time},
    ).result_rows[0][0]  # fmt: skip
    assert stored == 560
    assert len(consume_all(broker, topics["features"], 590)) == 590
    published = consume_all(broker, topics["scores"], 590)
    assert {(s["open_time"], s["score_version"]) for s in published} == set(by_key)
    for s in published[::100]:
        ScoreRow.model_validate(s)
