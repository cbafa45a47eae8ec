"""A model monitor round on real data, chDB and the real broker: outcomes, a recorded live
calibration check, drift against the training rows, both Evidently reports (their numbers
checked against ours), and the auto-retrain decision through the Kafka lock."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import numpy as np
import pytest

from calibration.metrics import quality
from monitoring.live import LiveConfig, realized
from monitoring.loop import ModelMonitor, MonitorConfig
from ohlcv.infra.kafka import ensure_topics
from registry.store import Registry
from reports.store import reports
from retrain.auto import RetrainConfig, events
from retrain.lock import KafkaLock
from schemas.topics import LOCKS, TopicSpec
from tests.monitoring.conftest import Scored

pytestmark = [pytest.mark.clickhouse, pytest.mark.broker, pytest.mark.slow]


def _lock_topic(broker: str) -> str:
    topic = f"t{uuid.uuid4().hex[:6]}.{LOCKS.name}"
    ensure_topics(broker, (TopicSpec(topic, LOCKS.key, {}, "", partitions=1),))
    return topic


def test_a_round_records_calibration_drift_reports_and_the_retrain_decision(
    scored: Scored, broker: str, tmp_path: Path
) -> None:
    topic = _lock_topic(broker)
    cfg = MonitorConfig(live=LiveConfig(window=2000, min_rows=100), drift_window=200, drift_threshold=3.0,
                        report_dir=tmp_path / "reports", artifact_dir=scored.artifact_dir,
                        retrain=RetrainConfig(enabled=False), thread_count=2)  # fmt: skip
    mon = ModelMonitor(scored.ch, [("XRPUSDT", "1m"), ("BTCUSDT", "1m")], cfg, KafkaLock(broker, topic=topic))
    (r,) = mon.run_once()  # BTCUSDT has no production model: passed over
    assert r.error is None and r.realized > 7000  # the newest 8000 scored bars, less unlabelled ones
    assert r.calibration is not None and r.calibration.rows == 2000 and r.calibration.live is not None
    assert r.drift is not None and r.drift.score is not None and len(r.drift.report.features) > 10
    assert r.decision is not None
    signal = r.drift.drifted or r.calibration.recommend_retrain
    assert r.decision.decision == ("recommended" if signal else "no_trigger")
    # both reports: files and their key numbers
    recs = {x.kind: x for x in reports(scored.ch, "XRPUSDT", "1m")}
    assert set(recs) == {"data_drift", "classification"} and set(r.reports) == {
        x.report_id for x in recs.values()
    }
    for rec in recs.values():
        assert Path(rec.path).stat().st_size == rec.bytes > 1_000_000
    drift = recs["data_drift"]
    assert drift.reference_rows > 1000 and drift.current_rows == 200
    assert len(drift.metrics["columns"]) == len(scored.model.feature_names)
    assert drift.drift_share == pytest.approx(drift.drifted_columns / len(drift.metrics["columns"]))
    cls = recs["classification"]
    rows = [x for x in realized(scored.ch, scored.model.model_id, "XRPUSDT", "1m", 2000) if x[3]][:2000]
    q = quality(np.array([x[1] for x in rows]), np.array([x[2] for x in rows]))
    assert cls.current_rows == 2000
    assert cls.metrics["accuracy"] == pytest.approx(q.accuracy, abs=1e-12)  # Evidently's and ours agree
    assert cls.metrics["roc_auc"] == pytest.approx(q.auc, abs=1e-9)
    assert cls.metrics["ece"] == pytest.approx(q.ece, abs=1e-12)
    # a second round inside REPORT_INTERVAL writes no new report
    mon.run_once()
    assert len(reports(scored.ch, "XRPUSDT", "1m")) == 2

    # auto-retrain on: a drift trigger (threshold 0), blocked while another process holds the lock
    mon.cfg = dataclasses.replace(
        cfg, drift_threshold=0.0, retrain=RetrainConfig(enabled=True, cooldown_s=3600)
    )
    other = KafkaLock(broker, topic=topic)
    lease = other.acquire("retrain:XRPUSDT:1m", ttl_s=60)
    assert lease.acquired
    (r,) = mon.run_once()
    assert r.decision is not None and r.decision.decision == "locked"
    assert r.decision.details["holder"] == other.owner
    other.release(lease)
    reg = Registry(scored.ch)
    (r,) = mon.run_once()
    assert r.decision is not None and r.decision.decision in ("kept", "promoted"), r.decision
    cand = reg.model(r.decision.details["candidate"])
    assert cand.trigger == "drift" and cand.parent_model_id == scored.model.model_id
    production = reg.production_id("XRPUSDT", "1m")
    assert production == (cand.model_id if r.decision.decision == "promoted" else scored.model.model_id)
    if r.decision.decision == "promoted":
        assert reg.events("XRPUSDT", "1m", 1)[0]["actor"] == "auto-retrain:drift"
    (r,) = mon.run_once()
    assert r.decision is not None and r.decision.decision == "cooldown"
    seen = [e["decision"] for e in events(scored.ch, "XRPUSDT", "1m")]
    assert seen[0] == "cooldown" and seen[1] in ("kept", "promoted") and seen[2] == "locked"
    assert seen[3:] == [seen[3]] * 2 and seen[3] in ("recommended", "no_trigger")
