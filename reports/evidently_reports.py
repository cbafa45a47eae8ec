"""Building the Evidently reports (evidently 0.7) and reading their key numbers.

- ``data_drift``: ``DataDriftPreset`` over the model's features, reference = the production
  model's training rows (``monitoring.drift.reference_rows``), current = the newest complete
  rows. Key numbers: drifted columns (count, share) and each column's drift value.
- ``classification``: ``ClassificationPreset`` over realized scores (probability, label) of
  clean windows. Key numbers: accuracy, precision, recall, F1, ROC AUC, log loss. Evidently
  0.7 has no ECE, Brier or calibration curve: those are ours (``calibration.metrics``) and are
  added to the key numbers.

Each report is one self-contained HTML file (~4 MB) under ``REPORT_DIR``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.metrics import quality
from registry.store import now_ms


@dataclass(frozen=True, slots=True)
class ReportRecord:
    report_id: str
    symbol: str
    interval: str
    kind: str  #: data_drift | classification
    at: int
    model_id: str
    trigger: str  #: schedule | manual
    reference_from: int | None
    reference_to: int | None
    current_from: int
    current_to: int
    reference_rows: int
    current_rows: int
    drifted_columns: int
    drift_share: float
    metrics: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    bytes: int = 0
    seconds: float = 0.0


def _metric_values(snapshot: Any) -> list[tuple[str, dict[str, Any], Any]]:
    return [
        (m["config"]["type"].rsplit(":", 1)[-1], m["config"], m["value"]) for m in snapshot.dict()["metrics"]
    ]


def _write(snapshot: Any, out_dir: Path, report_id: str) -> tuple[Path, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{report_id}.html"
    tmp = path.with_suffix(".part")
    snapshot.save_html(str(tmp))
    tmp.replace(path)
    return path, path.stat().st_size


def data_drift(
    reference: Sequence[dict[str, Any]],
    current: Sequence[dict[str, Any]],
    features: Sequence[str],
    *,
    out_dir: Path,
    symbol: str,
    interval: str,
    model_id: str,
    trigger: str = "schedule",
) -> ReportRecord:
    if len(reference) < 2 or len(current) < 2:
        raise ValueError(
            f"{symbol} {interval}: too few rows for a drift report "
            f"(reference {len(reference)}, current {len(current)})"
        )
    t0 = time.perf_counter()
    import pandas as pd  # type: ignore[import-untyped]
    from evidently import Report
    from evidently.presets import DataDriftPreset

    cols = list(features)
    ref = pd.DataFrame([[r[c] for c in cols] for r in reference], columns=cols, dtype="float64")
    cur = pd.DataFrame([[r[c] for c in cols] for r in current], columns=cols, dtype="float64")
    snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    count, share, per_column = 0, 0.0, {}
    for kind, cfg, value in _metric_values(snapshot):
        if kind == "DriftedColumnsCount":
            count, share = int(value["count"]), float(value["share"])
        elif kind == "ValueDrift":
            per_column[cfg["column"]] = {
                "value": float(value),
                "method": cfg.get("method"),
                "threshold": cfg.get("threshold"),
            }
    report_id = f"{symbol}-{interval}-data_drift-{now_ms()}-{uuid.uuid4().hex[:6]}"
    path, size = _write(snapshot, out_dir, report_id)
    return ReportRecord(
        report_id,
        symbol,
        interval,
        "data_drift",
        now_ms(),
        model_id,
        trigger,
        int(reference[0]["open_time"]),
        int(reference[-1]["open_time"]),
        int(current[0]["open_time"]),
        int(current[-1]["open_time"]),
        len(reference),
        len(current),
        count,
        share,
        {"columns": per_column},
        str(path),
        size,
        round(time.perf_counter() - t0, 3),
    )


def classification(
    realized: Sequence[tuple[int, float, int]],
    *,
    out_dir: Path,
    symbol: str,
    interval: str,
    model_id: str,
    threshold: float = 0.5,
    trigger: str = "schedule",
) -> ReportRecord:
    """``realized``: (open_time, probability, label) of clean windows, any order."""
    rows = sorted(realized)
    labels = {r[2] for r in rows}
    if len(rows) < 2 or labels != {0, 1}:
        raise ValueError(
            f"{symbol} {interval}: a classification report needs realized scores of both "
            f"classes (have {len(rows)} rows, labels {sorted(labels)})"
        )
    t0 = time.perf_counter()
    import pandas as pd
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    df = pd.DataFrame({"target": [r[2] for r in rows], "prediction": [r[1] for r in rows]})
    dd = DataDefinition(
        classification=[BinaryClassification(target="target", prediction_probas="prediction", pos_label=1)]
    )
    snapshot = Report([ClassificationPreset(probas_threshold=threshold)]).run(
        current_data=Dataset.from_pandas(df, data_definition=dd), reference_data=None
    )
    names = {
        "Accuracy": "accuracy",
        "Precision": "precision",
        "Recall": "recall",
        "F1Score": "f1",
        "RocAuc": "roc_auc",
        "LogLoss": "log_loss",
    }
    metrics: dict[str, Any] = {}
    for kind, _cfg, value in _metric_values(snapshot):
        if kind in names and isinstance(value, int | float):
            metrics[names[kind]] = float(value)
    q = quality(np.array(df["prediction"]), np.array(df["target"]), threshold=threshold)
    metrics.update({"ece": q.ece, "mce": q.mce, "brier": q.brier, "bins": q.as_dict()["bins"]})
    report_id = f"{symbol}-{interval}-classification-{now_ms()}-{uuid.uuid4().hex[:6]}"
    path, size = _write(snapshot, out_dir, report_id)
    return ReportRecord(
        report_id,
        symbol,
        interval,
        "classification",
        now_ms(),
        model_id,
        trigger,
        None,
        None,
        int(rows[0][0]),
        int(rows[-1][0]),
        0,
        len(rows),
        0,
        0.0,
        metrics,
        str(path),
        size,
        round(time.perf_counter() - t0, 3),
    )
