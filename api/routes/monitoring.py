"""Model monitoring, the scoring playground, training runs and reports (API key required).

Names from the original system: ``/api/models/production/calibration``,
``/api/inference/calibration/live``, ``/api/inference/predict``, ``/api/training/run``; and
``/api/reports`` (Evidently HTML). Nothing heavy is imported at start-up: CatBoost loads at the
first ``predict``, the training job and Evidently only inside their requests.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from api.deps import ApiKeyDep, SettingsDep, StreamDep, key_matches
from api.errors import StoreUnavailableError
from api.models import ErrorResponse
from api.routes.models import BAD_BODY, CONFLICT, ERRORS, PoolDep
from indicators.definitions import FEATURE_SET_VERSION
from registry.store import Model, Registry
from streams.continuity import MAX_TIME_MS

router = APIRouter(tags=["monitoring"], responses=ERRORS)
_KEYED = [ApiKeyDep]


def _production(pool: Any, symbol: str, interval: str) -> Model:
    with pool.client() as client:
        try:
            m = Registry(client).production(symbol, interval)
        except Exception as exc:
            raise StoreUnavailableError(f"model registry read failed: {exc}") from exc
    if m is None:
        raise HTTPException(404, f"{symbol} {interval} has no production model yet (ohlcv train --promote)")
    return m


def _monitor_config(settings: Any) -> Any:
    from monitoring.loop import MonitorConfig

    return MonitorConfig.from_settings(settings)


@router.get("/api/models/production/calibration", dependencies=_KEYED)
def production_calibration(st: StreamDep, pool: PoolDep) -> dict[str, Any]:
    """The production model's calibration on its validation rows at training: ECE, MCE, Brier,
    AUC and the reliability bins (the baseline live calibration is compared with)."""
    m = _production(pool, st.symbol, st.interval)
    keys = ("rows", "auc", "accuracy", "brier", "log_loss", "ece", "mce", "bins")
    return {
        "symbol": st.symbol,
        "interval": st.interval,
        "model_id": m.model_id,
        "version": m.version,
        **{k: m.metrics.get(k) for k in keys},
    }


@router.get("/api/inference/calibration/live", dependencies=_KEYED)
def calibration_live(st: StreamDep, pool: PoolDep, settings: SettingsDep) -> dict[str, Any]:
    """Live calibration of the production model now, over its newest realized scores on clean
    windows (scores on incomplete or repaired windows apart, as ``flagged``), against its
    training calibration; ``streak`` and ``recommend_retrain`` continue the monitor's recorded
    checks (``checks``: the newest ten)."""
    from monitoring import live

    m = _production(pool, st.symbol, st.interval)
    cfg = _monitor_config(settings).live
    with pool.client() as client:
        try:
            lc = live.evaluate(client, m, cfg)
            recent = live.checks(client, st.symbol, st.interval, 10)
        except Exception as exc:
            raise StoreUnavailableError(f"calibration read failed: {exc}") from exc
    return {
        **lc.as_dict(),
        "thresholds": {
            "ece_abs": cfg.ece_abs,
            "ece_rel": cfg.ece_rel,
            "streak": cfg.streak_n,
            "window": cfg.window,
            "min_rows": cfg.min_rows,
        },
        "checks": recent,
    }


class PredictRequest(BaseModel):
    symbol: str = Field(pattern=r"^[A-Za-z0-9]{2,30}$", examples=["XRPUSDT"])
    interval: str = Field(max_length=4, examples=["1m"])
    open_time: int | None = Field(default=None, ge=0, le=MAX_TIME_MS, description="absent: the newest row")
    threshold: float | None = Field(default=None, gt=0, lt=1, description="absent: INFERENCE_PROB_THRESHOLD")


_models_lock = threading.Lock()


def _loaded(request: Request, pool: Any, m: Model) -> Any:
    from registry.loader import load_model

    cache: dict[str, Any] = request.app.state.__dict__.setdefault("loaded_models", {})
    with _models_lock:
        if m.model_id not in cache:
            with pool.client() as client:
                cache.clear()
                cache[m.model_id] = load_model(Registry(client), m.model_id)
        return cache[m.model_id]


@router.post("/api/inference/predict", dependencies=_KEYED, responses={**BAD_BODY, **CONFLICT})
def predict(body: PredictRequest, request: Request, pool: PoolDep, settings: SettingsDep) -> dict[str, Any]:
    """The playground: score the newest (or a given) feature row of a stream with its production
    model, at the configured threshold or the one given. Nothing is logged."""
    from api.deps import served_stream_of
    from registry.artifacts import ArtifactError

    st = served_stream_of(settings, body.symbol, body.interval)
    m = _production(pool, st.symbol, st.interval)
    fq = request.app.state.feature_queries
    row = fq.latest(st) if body.open_time is None else fq.at(st, body.open_time)
    if row is None:
        at = "" if body.open_time is None else f" at open_time {body.open_time}"
        raise HTTPException(404, f"no feature row for {st.symbol} {st.interval}{at}")
    if row["feature_set_version"] != m.feature_set_version:
        raise HTTPException(
            409,
            f"the row has feature set {row['feature_set_version']}, the model learned "
            f"{m.feature_set_version}: rebuild the features (ohlcv features rebuild)",
        )
    try:
        loaded = _loaded(request, pool, m)
    except ArtifactError as exc:
        raise HTTPException(409, str(exc)) from exc
    threshold = body.threshold if body.threshold is not None else settings.inference_prob_threshold
    p = loaded.probability(row)
    return {
        "symbol": st.symbol,
        "interval": st.interval,
        "open_time": row["open_time"],
        "model_id": m.model_id,
        "model_version": m.version,
        "probability": p,
        "threshold": threshold,
        "decision": p >= threshold,
        "window_complete": row["window_complete"],
        "window_has_repair": row["window_has_repair"],
        "bars_missing_in_window": row["bars_missing_in_window"],
        "feature_version": row["feature_version"],
    }


class TrainRequest(BaseModel):
    symbol: str = Field(pattern=r"^[A-Za-z0-9]{2,30}$", examples=["XRPUSDT"])
    interval: str = Field(max_length=4, examples=["1m"])
    start_ms: int | None = Field(default=None, ge=0, le=MAX_TIME_MS, alias="from")
    end_ms: int | None = Field(default=None, ge=0, le=MAX_TIME_MS, alias="to")
    promote_if_recommended: bool = Field(default=False, description="apply the promotion rules when done")


@router.post("/api/training/run", status_code=202, dependencies=_KEYED, responses=BAD_BODY)
def training_run(body: TrainRequest, pool: PoolDep, settings: SettingsDep) -> dict[str, Any]:
    """Start a training job for a stream (in the background); follow it at ``/api/training/jobs``.
    400 when the range holds no feature rows."""
    from api.deps import served_stream_of

    st = served_stream_of(settings, body.symbol, body.interval)
    if body.start_ms is not None and body.end_ms is not None and body.start_ms > body.end_ms:
        raise HTTPException(400, "from is after to")
    where = "symbol = {s:String} AND interval = {i:String} AND feature_set_version = {v:UInt16}"
    params: dict[str, Any] = {"s": st.symbol, "i": st.interval, "v": FEATURE_SET_VERSION}
    if body.start_ms is not None:
        where += " AND open_time >= fromUnixTimestamp64Milli({a:Int64})"
        params["a"] = body.start_ms
    if body.end_ms is not None:
        where += " AND open_time <= fromUnixTimestamp64Milli({b:Int64})"
        params["b"] = body.end_ms
    with pool.client() as client:
        try:
            n = int(
                client.query(
                    f"SELECT count() FROM feature_snapshots FINAL WHERE {where}",  # noqa: S608
                    parameters=params,
                ).result_rows[0][0]
            )
        except Exception as exc:
            raise StoreUnavailableError(f"feature read failed: {exc}") from exc
    if n == 0:
        raise HTTPException(
            400,
            f"no feature rows for {st.symbol} {st.interval} in the range "
            "(run `ohlcv features rebuild`, or widen from/to)",
        )
    job_id = uuid.uuid4().hex

    def run() -> None:
        from registry.promotion import PromotionRules, recommend
        from training.train import TrainConfig, train_model

        with pool.client() as client:
            cfg = TrainConfig(
                horizon=settings.label_horizon_bars,
                dead_zone=settings.label_dead_zone,
                threshold=settings.inference_prob_threshold,
            )
            try:
                m = train_model(
                    client,
                    st.symbol,
                    st.interval,
                    artifact_dir=settings.artifact_dir,
                    config=cfg,
                    start_ms=body.start_ms,
                    end_ms=body.end_ms,
                    trigger="manual",
                    job_id=job_id,
                )
            except Exception:  # recorded as a failed job, with its error
                return
            if body.promote_if_recommended:
                reg = Registry(client)
                prod = reg.production(st.symbol, st.interval)
                rec = recommend(
                    m.metrics, prod.metrics if prod else None, PromotionRules.from_settings(settings)
                )
                if rec.recommended:
                    reg.promote(m.model_id, kind="auto", recommended=True, reasons=rec.reasons, actor="api")

    threading.Thread(target=run, name=f"training-{job_id[:8]}", daemon=True).start()
    return {"job_id": job_id, "status": "running", "symbol": st.symbol, "interval": st.interval, "rows": n}


@router.get("/api/training/retrain/events", dependencies=_KEYED)
def retrain_events(
    pool: PoolDep,
    symbol: Annotated[str | None, Query(max_length=30)] = None,
    interval: Annotated[str | None, Query(max_length=4)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    """The auto-retrain checks and their decisions, newest first (no_trigger, recommended,
    cooldown, locked, kept, promoted, failed), with the drift score and the reasons."""
    from retrain.auto import events

    with pool.client() as client:
        try:
            return events(client, symbol.upper() if symbol else None, interval, limit)
        except Exception as exc:
            raise StoreUnavailableError(f"retrain events read failed: {exc}") from exc


@router.get("/api/reports", dependencies=_KEYED)
def list_reports(
    pool: PoolDep,
    symbol: Annotated[str | None, Query(max_length=30)] = None,
    interval: Annotated[str | None, Query(max_length=4)] = None,
    kind: Annotated[str | None, Query(pattern="^(data_drift|classification)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    """Evidently reports, newest first, with their key numbers; ``url`` opens the HTML."""
    from dataclasses import asdict

    from reports.store import reports

    with pool.client() as client:
        try:
            recs = reports(client, symbol.upper() if symbol else None, interval, kind, limit)
        except Exception as exc:
            raise StoreUnavailableError(f"reports read failed: {exc}") from exc
    return [
        {**{k: v for k, v in asdict(r).items() if k != "path"}, "url": f"/api/reports/{r.report_id}"}
        for r in recs
    ]


@router.post("/api/reports/run", dependencies=_KEYED, responses=CONFLICT)
def run_reports(st: StreamDep, pool: PoolDep, settings: SettingsDep) -> list[dict[str, Any]]:
    """Build the stream's data drift and classification reports now (takes seconds: Evidently
    loads at the first call); answers their listing rows."""
    from monitoring.drift import current_rows, reference_rows
    from monitoring.loop import ModelMonitor

    m = _production(pool, st.symbol, st.interval)
    cfg = _monitor_config(settings)
    with pool.client() as client:
        try:
            mon = ModelMonitor(client, [], cfg)
            ids = mon.reports(
                m,
                reference_rows(client, m),
                current_rows(client, st.symbol, st.interval, cfg.drift_window),
                trigger="manual",
            )
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc
    if not ids:
        raise HTTPException(409, f"{st.symbol} {st.interval}: no rows to report on yet")
    return [r for r in list_reports(pool, st.symbol, st.interval, None, 50) if r["report_id"] in ids]


def _report_key(
    request: Request,
    settings: SettingsDep,
    api_key: Annotated[str | None, Query(description="the API key, for a browser link")] = None,
) -> None:
    key = request.headers.get("x-api-key") or api_key
    if not key:
        raise HTTPException(401, "API key required: X-API-Key header or api_key query parameter")
    if not key_matches(key, settings):
        raise HTTPException(403, "API key is not valid")


@router.get(
    "/api/reports/{report_id}",
    response_class=FileResponse,
    dependencies=[Depends(_report_key)],
    responses={410: {"model": ErrorResponse, "description": "the report's file is gone from REPORT_DIR"}},
)
def report_html(
    report_id: Annotated[str, Path(max_length=200)], pool: PoolDep, settings: SettingsDep
) -> FileResponse:
    """One report's self-contained HTML (open it in a browser: ``?api_key=`` may carry the key)."""
    from reports.store import UnknownReportError, report

    with pool.client() as client:
        try:
            rec = report(client, report_id)
        except UnknownReportError as exc:
            raise HTTPException(404, str(exc)) from exc
        except Exception as exc:
            raise StoreUnavailableError(f"reports read failed: {exc}") from exc
    path = FsPath(rec.path).resolve()
    root = settings.reports_dir.resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise HTTPException(410, f"report {report_id}'s file is no longer under REPORT_DIR ({root})")
    return FileResponse(path, media_type="text/html")
