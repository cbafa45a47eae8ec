"""The training job and the registry on real XRP feature rows in real chDB."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from catboost import CatBoostClassifier
from clickhouse_connect.driver.client import Client
from sklearn.metrics import roc_auc_score

from registry.artifacts import ArtifactError
from registry.store import Registry, RegistryError
from tests.topologies.helpers import xrp_candles
from training.dataset import NoTrainingDataError, load_rows
from training.labels import forward_labels
from training.train import TrainConfig, train_model

pytestmark = pytest.mark.clickhouse
FAST = TrainConfig(params={"iterations": 40, "depth": 4, "learning_rate": 0.1, "random_seed": 3})


def test_train_registers_a_model_whose_numbers_reproduce_from_its_artifact(
    xrp_features: Client, tmp_path: Path
) -> None:
    ch = xrp_features
    seen: list[tuple[int, int]] = []
    m = train_model(
        ch,
        "XRPUSDT",
        "1m",
        artifact_dir=tmp_path,
        config=FAST,
        thread_count=2,
        progress=lambda i, n: seen.append((i, n)),
    )
    assert seen[-1] == (40, 40) and len(seen) == 40
    reg = Registry(ch)
    got = reg.model(m.model_id)
    assert got == m and got.version == 1 and got.trigger == "manual" and got.parent_model_id == ""
    # the rows: complete windows with a label; the outages' incomplete windows were excluded
    rows = load_rows(ch, "XRPUSDT", "1m")
    assert m.train_rows + m.validation_rows <= rows.y.size and m.excluded_incomplete > 0
    assert m.label_balance == pytest.approx(rows.y.mean())
    # the artifact scores the validation rows to the recorded metrics (independent AUC: sklearn)
    model = CatBoostClassifier()
    model.load_model(blob=reg.artifact_bytes(m))
    va = rows.open_times >= rows.open_times[-m.validation_rows]
    p = model.predict_proba(rows.x[va])[:, 1]
    assert m.metrics["rows"] == int(va.sum())
    assert m.metrics["auc"] == pytest.approx(roc_auc_score(rows.y[va], p), rel=1e-9)
    assert set(m.importances) == set(m.feature_names) and sum(m.importances.values()) == pytest.approx(100)
    # registry tables: lineage, validation metrics, the job's final state
    assert ch.query("SELECT count() FROM model_lineage").result_rows[0][0] == 1
    assert ch.query("SELECT scope, rows FROM model_metrics_history").result_rows == [
        ("validation", m.validation_rows)
    ]
    (job,) = reg.jobs()
    assert (
        job["status"] == "succeeded"
        and job["model_id"] == m.model_id
        and job["finished_at"] >= job["started_at"]
    )
    # the label the job learned is training.labels' (spot check against the candles)
    t = np.array([c.open_time for c in xrp_candles()])
    y, _ = forward_labels(t, np.array([c.close for c in xrp_candles()]), 60_000, 5)
    idx = np.searchsorted(t, rows.open_times[:500])
    assert (y[idx] == rows.y[:500]).all()


def test_promote_rollback_and_a_corrupt_artifact_never_replaces_production(
    xrp_features: Client, tmp_path: Path
) -> None:
    ch = xrp_features
    reg = Registry(ch)
    a = train_model(ch, "XRPUSDT", "1m", artifact_dir=tmp_path, config=FAST, thread_count=2)
    with pytest.raises(RegistryError, match="has no production model"):
        reg.rollback("XRPUSDT", "1m")
    ev = reg.promote(a.model_id)
    assert ev["from_model_id"] == "" and reg.production_id("XRPUSDT", "1m") == a.model_id
    b = train_model(
        ch,
        "XRPUSDT",
        "1m",
        artifact_dir=tmp_path,
        trigger="drift",
        thread_count=2,
        config=TrainConfig(params={**FAST.params, "random_seed": 4}),
    )
    assert b.version == 2 and b.parent_model_id == a.model_id and b.trigger == "drift"
    reg.promote(b.model_id, kind="auto", recommended=True, reasons=["test"])
    assert reg.productions() == {("XRPUSDT", "1m"): b.model_id}
    (latest, first) = reg.events("XRPUSDT", "1m")[:2]
    assert latest["from_model_id"] == a.model_id and latest["to_metrics"]["auc"] == b.metrics["auc"]
    assert latest["from_metrics"]["auc"] == a.metrics["auc"] and first["kind"] == "promote"
    back = reg.rollback("XRPUSDT", "1m")
    assert back["kind"] == "rollback" and reg.production_id("XRPUSDT", "1m") == a.model_id
    # b's artifact altered on disk: promoting it is an error and production stays a
    Path(b.artifact_path).write_bytes(Path(b.artifact_path).read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match="does not match its checksum"):
        reg.promote(b.model_id)
    Path(a.artifact_path).unlink()
    with pytest.raises(ArtifactError, match="is missing"):
        reg.artifact_bytes(reg.model(a.model_id))
    assert reg.production_id("XRPUSDT", "1m") == a.model_id
    with pytest.raises(RegistryError, match="unknown model"):
        reg.promote("nope")
    assert json.loads(json.dumps(reg.events()))  # events are JSON-able for the API


def test_a_range_without_rows_fails_the_job_with_a_clear_error(xrp_features: Client, tmp_path: Path) -> None:
    with pytest.raises(NoTrainingDataError, match="no feature rows for XRPUSDT 1m"):
        train_model(
            xrp_features, "XRPUSDT", "1m", artifact_dir=tmp_path, config=FAST, start_ms=0, end_ms=1000
        )
    (job,) = Registry(xrp_features).jobs()
    assert job["status"] == "failed" and "NoTrainingDataError" in job["error"] and job["model_id"] == ""
    assert not list(tmp_path.iterdir())
