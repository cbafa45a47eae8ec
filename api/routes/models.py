"""Model registry and inference routes (API key required), names from the original system:
``/api/models/...``, ``/api/training/jobs``, ``/api/inference/latest|history``.

Reads and writes go through ``registry.store.Registry`` on the API's pooled ClickHouse
clients. Promote and rollback are events (``promotion_events``); a promotion checks the
model's artifact first, so a corrupt or missing artifact is a 409 and production is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from api.deps import ApiKeyDep, SettingsDep, StreamDep
from api.errors import StoreUnavailableError
from api.models import ErrorResponse
from api.queries import ClientPool
from registry.artifacts import ArtifactError
from registry.promotion import PromotionRules, recommend
from registry.store import Registry, RegistryError
from schemas.scores import SCORE_COLUMNS
from streams.continuity import MAX_TIME_MS

T = TypeVar("T")
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "no API key (X-API-Key)"},
    403: {"model": ErrorResponse, "description": "wrong API key"},
    404: {"model": ErrorResponse, "description": "stream not served, or unknown model"},
    503: {"model": ErrorResponse, "description": "ClickHouse is unavailable"},
}
#: routes with a JSON body: one that is not JSON at all is a 400 (FastAPI's), a bad field a 422
BAD_BODY: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "the body is not valid JSON (or, for a training run, from is after to)",
    },
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "the change cannot be made (artifact corrupt or missing, "
          "already production, nothing to roll back to)"},
}  # fmt: skip

router = APIRouter(tags=["models"], dependencies=[ApiKeyDep], responses=ERRORS)


async def get_pool(request: Request) -> ClientPool:
    queries = getattr(request.app.state, "queries", None)
    if queries is None:
        raise StoreUnavailableError("the API has not started: its lifespan did not run")
    pool: ClientPool = queries.pool
    return pool


PoolDep = Annotated[ClientPool, Depends(get_pool)]


@contextmanager
def _registry(pool: ClientPool) -> Iterator[Registry]:
    with pool.client() as client:
        try:
            yield Registry(client)
        except (RegistryError, ArtifactError, HTTPException):
            raise
        except Exception as exc:
            raise StoreUnavailableError(f"model registry read failed: {exc}") from exc


def _call(pool: ClientPool, fn: Callable[[Registry], T]) -> T:
    with _registry(pool) as reg:
        try:
            return fn(reg)
        except RegistryError as exc:
            code = 404 if "unknown model" in str(exc) else 409
            raise HTTPException(code, str(exc)) from exc
        except ArtifactError as exc:
            raise HTTPException(409, str(exc)) from exc


def _rules(settings: Any) -> PromotionRules:
    return PromotionRules.from_settings(settings)


def _stream_summary(reg: Registry, symbol: str, interval: str, rules: PromotionRules) -> dict[str, Any]:
    models = reg.models(symbol, interval)
    prod_id = reg.production_id(symbol, interval)
    prod = next((m for m in models if m.model_id == prod_id), None)
    candidate = next((m for m in models if m.model_id != prod_id), None)
    rec = recommend(candidate.metrics, prod.metrics if prod else None, rules) if candidate else None
    return {
        "symbol": symbol, "interval": interval, "models": len(models),
        "production": prod.as_dict() if prod else None,
        "candidate": candidate.as_dict() if candidate else None,
        "promote_recommend": bool(rec and rec.recommended), "reasons": rec.reasons if rec else [],
    }  # fmt: skip


@router.get("/api/models/summary")
def summary(st: StreamDep, pool: PoolDep, settings: SettingsDep) -> dict[str, Any]:
    """The stream's production model, its newest other model (the candidate) and whether the
    promotion rules recommend the candidate (``promote_recommend``, with the reasons)."""
    return _call(pool, lambda reg: _stream_summary(reg, st.symbol, st.interval, _rules(settings)))


@router.get("/api/models/promotion/events")
def promotion_events(
    st: StreamDep, pool: PoolDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """Promotions, auto-promotions and rollbacks of the stream, newest first, with both models' metrics."""
    return _call(pool, lambda reg: reg.events(st.symbol, st.interval, limit))


@router.post("/api/models/promotion/recommend", responses=CONFLICT)
def promotion_recommend(st: StreamDep, pool: PoolDep, settings: SettingsDep) -> dict[str, Any]:
    """Apply the promotion rules to the stream's candidate and promote it when they recommend
    it (kind ``auto``); answers the summary and the promotion event (null when not promoted)."""

    def run(reg: Registry) -> dict[str, Any]:
        s = _stream_summary(reg, st.symbol, st.interval, _rules(settings))
        event = None
        if s["promote_recommend"]:
            cid = s["candidate"]["model_id"]
            event = reg.promote(cid, kind="auto", recommended=True, reasons=s["reasons"], actor="api")
        return {**s, "event": event}

    return _call(pool, run)


@router.post("/api/models/rollback", responses=CONFLICT)
def rollback(st: StreamDep, pool: PoolDep) -> dict[str, Any]:
    """Make the model that was production before the current one production again."""
    return _call(pool, lambda reg: reg.rollback(st.symbol, st.interval, actor="api"))


@router.get("/api/models")
def list_models(
    pool: PoolDep,
    settings: SettingsDep,
    symbol: Annotated[str | None, Query(max_length=30, description="only this symbol")] = None,
    interval: Annotated[str | None, Query(max_length=4, description="only this interval")] = None,
) -> list[dict[str, Any]]:
    """Registered models, newest first; ``is_production`` marks each stream's production model."""

    def run(reg: Registry) -> list[dict[str, Any]]:
        prod = set(reg.productions().values())
        models = reg.models(symbol.upper() if symbol else None, interval)
        return [{**m.as_dict(), "is_production": m.model_id in prod} for m in models]

    return _call(pool, run)


@router.get("/api/models/{model_id}")
def get_model(model_id: Annotated[str, Path(max_length=200)], pool: PoolDep) -> dict[str, Any]:
    """One model: metrics (validation and training), reliability bins, importances, data range,
    params, lineage."""

    def run(reg: Registry) -> dict[str, Any]:
        m = reg.model(model_id)
        return {**m.as_dict(), "is_production": reg.production_id(m.symbol, m.interval) == m.model_id}

    return _call(pool, run)


@router.post("/api/models/{model_id}/promote", responses=CONFLICT)
def promote(model_id: Annotated[str, Path(max_length=200)], pool: PoolDep) -> dict[str, Any]:
    """Make the model production for its stream (manual: the rules are not applied)."""
    return _call(pool, lambda reg: reg.promote(model_id, actor="api"))


@router.get("/api/training/jobs")
def training_jobs(pool: PoolDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
    """Training jobs, newest first, in their last state (running, succeeded, failed with the error)."""
    return _call(pool, lambda reg: reg.jobs(limit))


_SCORE_SELECT = ", ".join(
    f"toUnixTimestamp64Milli({c})" if c in ("open_time", "feature_emitted_at", "scored_at") else c
    for c in SCORE_COLUMNS
)


def _scores(pool: ClientPool, st: Any, limit: int, before: int | None) -> list[dict[str, Any]]:
    where = "symbol = {s:String} AND interval = {i:String}"
    params: dict[str, Any] = {"s": st.symbol, "i": st.interval, "n": limit}
    if before is not None:
        where += " AND open_time < fromUnixTimestamp64Milli({b:Int64})"
        params["b"] = before
    # the current score of each open time: its highest score_version
    sql = (
        f"SELECT {_SCORE_SELECT} FROM model_inference_log FINAL WHERE {where} "  # noqa: S608 - constants
        "ORDER BY open_time DESC, score_version DESC LIMIT 1 BY open_time LIMIT {n:UInt32}"
    )
    with pool.client() as client:
        try:
            rows = client.query(sql, parameters=params).result_rows
        except Exception as exc:
            raise StoreUnavailableError(f"inference read failed: {exc}") from exc
    return [dict(zip(SCORE_COLUMNS, r, strict=True)) for r in reversed(rows)]


@router.get("/api/inference/latest")
def inference_latest(st: StreamDep, pool: PoolDep) -> dict[str, Any]:
    """The score of the stream's newest scored candle (404 while there is none)."""
    rows = _scores(pool, st, 1, None)
    if not rows:
        raise HTTPException(
            404,
            f"no score is stored for {st.symbol} {st.interval} yet: the scoring topology scores feature "
            "rows once the stream has a production model (ohlcv train --promote)",
        )
    return rows[0]


@router.get("/api/inference/history")
def inference_history(
    st: StreamDep,
    pool: PoolDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    before_open_time: Annotated[int | None, Query(ge=0, le=MAX_TIME_MS)] = None,
) -> dict[str, Any]:
    """The current score of each of the newest ``limit`` scored candles (before the cursor),
    ascending; ``incomplete`` counts the scores on windows with a gap, ``repaired`` those with
    a repaired bar (reported apart, never silently mixed in)."""
    rows = _scores(pool, st, limit, before_open_time)
    return {
        "symbol": st.symbol, "interval": st.interval, "rows": rows,
        "incomplete": sum(1 for r in rows if not r["window_complete"]),
        "repaired": sum(1 for r in rows if r["window_has_repair"]),
        "next_before_open_time": rows[0]["open_time"] if len(rows) == limit else None,
    }  # fmt: skip
