"""REST candle routes under ``/api/ohlcv`` (API key required): recent, meta, history, delta,
continuity, gaps/status. Thin: validation in the signature and ``api.deps``, reads in
``api.queries``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response

from api.deps import (
    ApiKeyDep,
    BooksDep,
    QueriesDep,
    ReadsDep,
    ScanRangeDep,
    SettingsDep,
    StreamDep,
    next_cursors,
    one_cursor,
)
from api.metrics import DELTA_REQUESTS
from api.models import (
    ContinuityResponse,
    DeltaResponse,
    ErrorResponse,
    GapState,
    GapStatusResponse,
    HistoryResponse,
    MetaResponse,
    RecentResponse,
)
from api.recent_book import RECENT_SERVED
from streams.continuity import MAX_TIME_MS

MAX_LIMIT = 1000
MAX_DELTA_LIMIT = 5000
MAX_GAPS_LIMIT = 10_000
DEFAULT_SAMPLE_FOR_GAP = 2000

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "no API key (X-API-Key)"},
    403: {"model": ErrorResponse, "description": "wrong API key"},
    404: {"model": ErrorResponse, "description": "symbol or interval not served by this deployment"},
    503: {"model": ErrorResponse, "description": "ClickHouse is unavailable"},
}

router = APIRouter(prefix="/api/ohlcv", tags=["ohlcv"], dependencies=[ApiKeyDep], responses=ERRORS)

Limit = Annotated[
    int,
    Query(ge=1, le=MAX_LIMIT, description=f"candles per answer, 1..{MAX_LIMIT}; more is refused with 422"),
]


@router.get("/streams")
def streams(settings: SettingsDep) -> dict[str, Any]:
    """Every stream this deployment serves (ingested, or resampled from 1m), and the continuity
    scan's windows (``CONTINUITY_WINDOWS_DAYS``: whole days ending now, or ``all``)."""
    resampled = set(settings.resample_intervals) - set(settings.intervals)
    return {
        "streams": [
            {"symbol": s, "interval": i, "resampled": i in resampled}
            for s in settings.symbols
            for i in settings.all_intervals
        ],
        "continuity_windows": list(settings.continuity_windows_days),
        "continuity_scan_interval_s": settings.continuity_scan_interval_s,
    }


@router.get("/continuity/scans")
def continuity_scans(queries: QueriesDep) -> dict[str, Any]:
    """The scheduled continuity scan's newest result per stream and window (``continuity_scans``:
    completeness, holes, the scanned span), and when the newest was taken; empty before the
    first cycle (``CONTINUITY_SCAN_INTERVAL_S``)."""
    scans = queries.last_scans()
    return {"scanned_at": max((s["scanned_at"] for s in scans), default=None), "scans": scans}


@router.get("/recent", response_model=RecentResponse)
async def recent(
    st: StreamDep,
    queries: QueriesDep,
    reads: ReadsDep,
    books: BooksDep,
    response: Response,
    limit: Limit = 100,
    include_open: Annotated[
        bool, Query(description="false: closed candles only; true: the candle in progress may be the last")
    ] = True,
) -> RecentResponse:
    """The newest ``limit`` candles, ascending by open_time.

    Served from the process's live book of the stream when it holds the answer (header
    ``X-Recent-Source: book``; api.recent_book), else from ClickHouse (``clickhouse``)."""
    candles = books.answer(st, limit, include_open) if books is not None else None
    source = "book"
    if candles is None:
        # identical concurrent calls share one query (api.coalesce)
        source = "clickhouse"
        candles = await reads.read(
            ("recent", st.key, limit, include_open), queries.recent, st, limit, include_open
        )
    response.headers["X-Recent-Source"] = source
    RECENT_SERVED.labels(source).inc()
    return RecentResponse.model_validate(
        {"symbol": st.symbol, "interval": st.interval, "count": len(candles), "candles": candles}
    )


@router.get(
    "/meta",
    response_model=MetaResponse,
    responses={400: {"model": ErrorResponse, "description": "sample_for_gap together with from/to"}},
)
def meta(
    st: StreamDep,
    queries: QueriesDep,
    scan_range: ScanRangeDep,
    sample_for_gap: Annotated[
        int | None,
        Query(
            ge=1,
            le=1_000_000,
            description=f"how many of the newest closed candles to sample "
            f"(default {DEFAULT_SAMPLE_FOR_GAP}); not with from/to",
        ),
    ] = None,
) -> MetaResponse:
    """Span and count of the stored closed candles; completeness and the largest gap over the
    sample, or over from/to (either may be absent: the stored edge; see ``/continuity``).

    ``completeness_percent`` keeps the original name but is a ratio in [0, 1]: candles divided by
    the bar slots of ``completeness_span`` (null without data): the oldest to the newest sampled
    candle, or the from/to range, whose holes at a given bound count. ``largest_gap_bars`` is the
    longest run of missing bars inside it.
    """
    if scan_range.given and sample_for_gap is not None:
        raise HTTPException(400, "sample_for_gap and from/to are mutually exclusive: pass one of them")
    m = queries.meta(st, sample_for_gap or DEFAULT_SAMPLE_FOR_GAP)
    body = {
        "symbol": st.symbol, "interval": st.interval, "earliest_open_time": m["earliest_open_time"],
        "latest_open_time": m["latest_open_time"], "count": m["count"],
    }  # fmt: skip
    if not scan_range.given:
        return MetaResponse.model_validate({
            **body, "sample_for_gap": sample_for_gap or DEFAULT_SAMPLE_FOR_GAP,
            "sample_bars": m["sample_bars"],
            "expected_bars": m["expected_bars"], "completeness_percent": m["completeness"],
            "completeness_ratio": m["completeness"], "largest_gap_bars": m["largest_gap_bars"],
            "completeness_span": m["span"],
        })  # fmt: skip
    r = queries.continuity(st, scan_range.start_ms, scan_range.end_ms, scan_range.now_ms, max_ranges=0)
    return MetaResponse.model_validate({
        **body, "sample_for_gap": None, "sample_bars": r.present_bars,
        "expected_bars": r.expected_bars if r.expected_bars else None,
        "completeness_percent": r.completeness_ratio, "completeness_ratio": r.completeness_ratio,
        "largest_gap_bars": r.largest_gap_bars, "completeness_span": r.span_json(),
    })  # fmt: skip


@router.get("/continuity", response_model=ContinuityResponse)
def continuity(
    st: StreamDep,
    queries: QueriesDep,
    scan_range: ScanRangeDep,
    limit: Annotated[
        int, Query(ge=1, le=MAX_GAPS_LIMIT, description="most missing ranges listed (gap_count counts all)")
    ] = 1000,
) -> ContinuityResponse:
    """Continuity of the stored closed candles over from/to (both optional; absent: the whole
    stored span, first to last stored candle), computed in one ClickHouse query.

    A given ``from`` (``to``) counts the hole between it and the first (after the last) stored
    candle; only bars closed by now are expected. ``from`` not before ``to``, or a ``from`` more
    than 10,512,000 bars (20 years of 1m) back, is a 422 naming the parameter.
    """
    r = queries.continuity(st, scan_range.start_ms, scan_range.end_ms, scan_range.now_ms, max_ranges=limit)
    return ContinuityResponse.model_validate({
        "symbol": st.symbol, "interval": st.interval, "span": r.span_json(),
        "expected_bars": r.expected_bars, "present_bars": r.present_bars, "missing_bars": r.missing_bars,
        "completeness_ratio": r.completeness_ratio, "completeness_percent": r.completeness_ratio,
        "gap_count": r.gap_count, "gaps": [m.to_json() for m in r.missing],
        "gaps_truncated": r.gap_count > len(r.missing), "largest_gap_bars": r.largest_gap_bars,
        "first_open_time": r.first_open_time, "last_open_time": r.last_open_time,
    })  # fmt: skip


@router.get(
    "/history",
    response_model=HistoryResponse,
    responses={400: {"model": ErrorResponse, "description": "both cursors given"}},
)
def history(
    st: StreamDep,
    queries: QueriesDep,
    limit: Limit = 500,
    before_open_time: Annotated[
        int | None,
        Query(ge=0, le=MAX_TIME_MS, description="page of the closed candles opening before this (ms)"),
    ] = None,
    after_open_time: Annotated[
        int | None,
        Query(ge=0, le=MAX_TIME_MS, description="page of the closed candles opening after this (ms)"),
    ] = None,
) -> HistoryResponse:
    """Cursor paging over closed candles, ascending within a page.

    No cursor: the newest page. Walk back with ``next_before_open_time`` or forward with
    ``next_after_open_time`` until it is null; each stored candle is returned exactly once.
    """
    one_cursor(before_open_time, after_open_time)
    candles, more = queries.history(st, limit, before_open_time, after_open_time)
    return HistoryResponse.model_validate({
        "symbol": st.symbol, "interval": st.interval, "count": len(candles), "candles": candles,
        **next_cursors(candles, more, forward=after_open_time is not None),
    })  # fmt: skip


@router.get("/delta", response_model=DeltaResponse)
def delta(
    st: StreamDep,
    queries: QueriesDep,
    since: Annotated[
        int, Query(ge=0, description="open_time (ms) of the last closed candle the client holds")
    ],
    limit: Annotated[
        int, Query(ge=1, le=MAX_DELTA_LIMIT, description="most candles and most repairs")
    ] = 1000,
) -> DeltaResponse:
    """What changed since ``since``: closed candles from one interval before it (the overlap
    lets the client re-check its last candle) and candles repaired since then."""
    candles, repairs, truncated = queries.delta(st, since, limit)
    DELTA_REQUESTS.labels(st.symbol, st.interval, "true" if truncated else "false").inc()
    return DeltaResponse.model_validate({
        "symbol": st.symbol, "interval": st.interval, "since": since, "candles": candles,
        "repairs": repairs, "truncated": truncated,
    })  # fmt: skip


@router.get("/gaps/status", response_model=GapStatusResponse)
def gaps_status(
    st: StreamDep,
    queries: QueriesDep,
    state: Annotated[GapState | None, Query(description="only segments in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="newest segments to return")] = 1000,
) -> GapStatusResponse:
    """Gap segments of the stream (``gap_segments`` FINAL), ascending by segment_id."""
    segments, open_count, open_missing = queries.gap_status(st, limit, state)
    return GapStatusResponse.model_validate({
        "symbol": st.symbol, "interval": st.interval, "open_segments": open_count,
        "open_missing_bars": open_missing, "segments": segments,
    })  # fmt: skip
