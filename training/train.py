"""The training job: one stream's labelled feature rows -> a CatBoost classifier, its metrics,
its artifact and its registry rows.

Steps: ``training.dataset.load_rows`` (complete windows only unless asked), the purged time
split of ``training.split``, ``CatBoostClassifier.fit`` on the training rows alone (the
validation rows are never seen by the fit: no early stopping on them), ``calibration.metrics``
on the validation rows (and on the training rows, for over-fit checks), the artifact written
with its SHA-256, and ``model_registry``/``model_lineage``/``model_metrics_history`` rows; each
state of the job is a ``training_jobs`` row. A failure records the job as failed with its error
and registers nothing.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client

from calibration.metrics import quality
from indicators.definitions import FEATURE_SET_VERSION
from registry.artifacts import store_artifact
from registry.store import Model, Registry, now_ms
from schemas.intervals import interval_ms
from training.dataset import NoTrainingDataError, load_rows
from training.split import time_split

#: (iterations done, iterations in all)
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    horizon: int = 5  #: LABEL_HORIZON_BARS
    dead_zone: float = 0.0  #: LABEL_DEAD_ZONE
    validation_fraction: float = 0.2
    include_incomplete: bool = False
    threshold: float = 0.5  #: INFERENCE_PROB_THRESHOLD, for accuracy
    news_features: bool = False  #: news_sentiment and news_count as inputs (``--news``)
    params: dict[str, Any] = field(
        default_factory=lambda: {
            "iterations": 300,
            "depth": 6,
            "learning_rate": 0.05,
            "loss_function": "Logloss",
            "random_seed": 42,
            "l2_leaf_reg": 3.0,
        }
    )


class _Callback:
    def __init__(self, total: int, progress: Progress | None):
        self.total = total
        self.progress = progress

    def after_iteration(self, info: Any) -> bool:
        if self.progress is not None:
            self.progress(info.iteration, self.total)
        return True


def train_model(
    client: Client,
    symbol: str,
    interval: str,
    *,
    artifact_dir: Path,
    config: TrainConfig | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    trigger: str = "manual",
    parent_model_id: str | None = None,
    thread_count: int = -1,
    progress: Progress | None = None,
    job_id: str | None = None,
) -> Model:
    """Train, evaluate and register one model; returns it (not promoted: see registry.promotion)."""
    from catboost import CatBoostClassifier  # heavy: only in the training job

    cfg = config or TrainConfig()
    reg = Registry(client)
    job_id = job_id or uuid.uuid4().hex
    started = now_ms()
    job = {
        "job_id": job_id,
        "symbol": symbol,
        "interval": interval,
        "status": "running",
        "trigger": trigger,
        "requested_from": start_ms,
        "requested_to": end_ms,
        "started_at": started,
        "finished_at": None,
        "model_id": "",
        "error": "",
    }
    reg.job(job)
    try:
        rows = load_rows(
            client,
            symbol,
            interval,
            start_ms=start_ms,
            end_ms=end_ms,
            horizon=cfg.horizon,
            dead_zone=cfg.dead_zone,
            include_incomplete=cfg.include_incomplete,
            news=cfg.news_features,
        )
        tr, va = time_split(rows.open_times, interval_ms(interval), cfg.horizon, cfg.validation_fraction)
        for name, idx in (("training", tr), ("validation", va)):
            if np.unique(rows.y[idx]).size < 2:
                raise NoTrainingDataError(f"{symbol} {interval}: the {name} rows hold one class only")
        params = {**cfg.params, "thread_count": thread_count, "verbose": False, "allow_writing_files": False}
        model = CatBoostClassifier(**params)
        t0 = time.perf_counter()
        model.fit(rows.x[tr], rows.y[tr], callbacks=[_Callback(int(params["iterations"]), progress)])
        secs = time.perf_counter() - t0
        q_va = quality(model.predict_proba(rows.x[va])[:, 1], rows.y[va], threshold=cfg.threshold).as_dict()
        q_tr = quality(model.predict_proba(rows.x[tr])[:, 1], rows.y[tr], threshold=cfg.threshold).as_dict()
        version = reg.next_version(symbol, interval)
        model_id = f"{symbol}-{interval}-v{version}-{job_id[:8]}"
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d) / "model.cbm"
            model.save_model(str(tmp))
            path, digest = store_artifact(artifact_dir, model_id, tmp.read_bytes())
        if parent_model_id is None:
            parent_model_id = reg.production_id(symbol, interval) or ""
        m = Model(
            model_id=model_id,
            symbol=symbol,
            interval=interval,
            version=version,
            created_at=now_ms(),
            algorithm="catboost",
            artifact_path=str(path),
            artifact_sha256=digest,
            feature_names=list(rows.feature_names),
            feature_set_version=FEATURE_SET_VERSION,
            label_horizon_bars=cfg.horizon,
            label_dead_zone=cfg.dead_zone,
            params={k: v for k, v in params.items() if k not in ("verbose", "allow_writing_files")},
            data_from=int(rows.open_times[0]),
            data_to=int(rows.open_times[-1]),
            train_rows=int(tr.size),
            validation_rows=int(va.size),
            excluded_incomplete=rows.excluded_incomplete,
            label_balance=float(rows.y.mean()),
            metrics=q_va,
            train_metrics=q_tr,
            importances={
                n: float(v) for n, v in zip(rows.feature_names, model.get_feature_importance(), strict=True)
            },
            parent_model_id=parent_model_id,
            trigger=trigger,
            training_job_id=job_id,
            train_seconds=secs,
        )
        reg.register(m)
    except BaseException as exc:
        reg.job({**job, "status": "failed", "finished_at": now_ms(), "error": f"{type(exc).__name__}: {exc}"})
        raise
    reg.job({**job, "status": "succeeded", "finished_at": now_ms(), "model_id": model_id})
    return m
