"""REST feature routes under ``/api/features`` (API key required): latest, history, drift.

Rows are ``feature_snapshots`` under FINAL (``api.feature_queries``); drift is
``indicators.drift`` over the newest complete-window rows.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from api.deps import ApiKeyDep, SettingsDep, StreamDep, next_cursors, one_cursor
from api.errors import StoreUnavailableError
from api.feature_queries import FeatureQueries
from api.models import ErrorResponse, FeatureDriftResponse, FeatureHistoryResponse
from indicators.drift import feature_drift
from schemas.features import FeatureRow
from streams.continuity import MAX_TIME_MS

MAX_LIMIT = 1000
MIN_WINDOW, MAX_WINDOW = 20, 5000

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "no API key (X-API-Key)"},
    403: {"model": ErrorResponse, "description": "wrong API key"},
    404: {"model": ErrorResponse, "description": "stream not served, or (latest) no feature row stored yet"},
    503: {"model": ErrorResponse, "description": "ClickHouse is unavailable"},
}

router = APIRouter(prefix="/api/features", tags=["features"], dependencies=[ApiKeyDep], responses=ERRORS)


async def get_feature_queries(request: Request) -> FeatureQueries:
    queries: FeatureQueries | None = getattr(request.app.state, "feature_queries", None)
    if queries is None:
        raise StoreUnavailableError("the API has not started: its lifespan did not run")
    return queries


FeatureQueriesDep = Annotated[FeatureQueries, Depends(get_feature_queries)]


@router.get("/latest", response_model=FeatureRow)
def latest(st: StreamDep, queries: FeatureQueriesDep) -> Any:
    """The feature row of the stream's newest stored closed candle (404 while there is none)."""
    row = queries.latest(st)
    if row is None:
        raise HTTPException(
            404,
            f"no feature row is stored for {st.symbol} {st.interval} yet: the features topology "
            "writes one per closed candle (history bulk-loaded without events: ohlcv features rebuild)",
        )
    return row


@router.get(
    "/history",
    response_model=FeatureHistoryResponse,
    responses={400: {"model": ErrorResponse, "description": "both cursors given"}},
)
def history(
    st: StreamDep,
    queries: FeatureQueriesDep,
    limit: Annotated[
        int,
        Query(ge=1, le=MAX_LIMIT, description=f"rows per answer, 1..{MAX_LIMIT}; more is refused with 422"),
    ] = 500,
    before_open_time: Annotated[
        int | None, Query(ge=0, le=MAX_TIME_MS, description="page of the rows opening before this (ms)")
    ] = None,
    after_open_time: Annotated[
        int | None, Query(ge=0, le=MAX_TIME_MS, description="page of the rows opening after this (ms)")
    ] = None,
) -> FeatureHistoryResponse:
    """Cursor paging over feature rows, ascending within a page, as candle history: no cursor is
    the newest page; walk back with ``next_before_open_time`` or forward with
    ``next_after_open_time`` until it is null."""
    one_cursor(before_open_time, after_open_time)
    rows, more = queries.history(st, limit, before_open_time, after_open_time)
    return FeatureHistoryResponse.model_validate({
        "symbol": st.symbol, "interval": st.interval, "count": len(rows), "rows": rows,
        **next_cursors(rows, more, forward=after_open_time is not None),
    })  # fmt: skip


@router.get("/drift", response_model=FeatureDriftResponse)
def drift(
    st: StreamDep,
    queries: FeatureQueriesDep,
    settings: SettingsDep,
    window: Annotated[
        int,
        Query(ge=MIN_WINDOW, le=MAX_WINDOW, description=f"rows per side, {MIN_WINDOW}..{MAX_WINDOW}"),
    ] = 200,
) -> FeatureDriftResponse:
    """Each feature's newest ``window`` complete-window rows against the ``window`` before them:
    z of the recent mean in standard errors of the reference, flagged above
    ``DRIFT_Z_THRESHOLD`` (``indicators.drift``). Fewer than 2 x window complete rows:
    ``status`` insufficient."""
    report = feature_drift(queries.newest_complete(st, 2 * window), window, settings.drift_z_threshold)
    span = ("from_open_time", "to_open_time")
    return FeatureDriftResponse.model_validate({
        "symbol": st.symbol, "interval": st.interval, "status": report.status, "window": window,
        "threshold": report.threshold, "complete_rows": report.rows,
        "recent": None if report.recent_span is None else dict(zip(span, report.recent_span, strict=True)),
        "reference": None if report.reference_span is None
        else dict(zip(span, report.reference_span, strict=True)),
        "drifted": report.drifted, "features": [f.to_json() for f in report.features],
    })  # fmt: skip
