"""Response models of the REST API and the WebSocket snapshot (the OpenAPI contract).

Times are ms since epoch, UTC, as in the original system; candles are ``schemas.events.CandleOut``.
Live WebSocket messages are the candle events of ``schemas.events`` unchanged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.events import CandleOut
from schemas.features import FeatureRow

HealthStatus = Literal["ok", "degraded", "down"]
GapState = Literal["open", "repairing", "repaired", "exchange_gap", "failed"]


class ErrorResponse(BaseModel):
    """Every 4xx/5xx the API raises itself: one sentence naming what is wrong."""

    detail: str


class RecentResponse(BaseModel):
    symbol: str
    interval: str
    count: int
    candles: list[CandleOut] = Field(description="ascending by open_time")


class ScanSpan(BaseModel):
    """The bar slots a completeness figure covers: first and last expected bar, both counted."""

    from_open_time: int | None = Field(description="open time (ms) of the first bar slot; null: none")
    to_open_time: int | None = Field(description="open time (ms) of the last bar slot; null: none")
    from_iso: str | None = Field(description="from_open_time as UTC ISO 8601")
    to_iso: str | None = Field(description="to_open_time as UTC ISO 8601")
    from_given: bool = Field(description="true: starts at the given from (the hole before data counts); "
                             "false: at the first stored candle")  # fmt: skip
    to_given: bool = Field(description="true: ends at the given to (or the last closed bar before it); "
                           "false: at the last stored candle")  # fmt: skip
    expected_bars: int = Field(ge=0, description="bar slots in the span")


class MetaResponse(BaseModel):
    symbol: str
    interval: str
    earliest_open_time: int | None = Field(description="oldest closed candle stored")
    latest_open_time: int | None = Field(description="newest closed candle stored")
    count: int = Field(description="closed candles stored")
    sample_for_gap: int | None = Field(
        description="how many of the newest closed candles were sampled; null when from/to chose the range"
    )
    sample_bars: int = Field(description="closed candles in the sample or range (<= sample_for_gap)")
    expected_bars: int | None = Field(description="bar slots of completeness_span; null without data")
    completeness_percent: float | None = Field(
        ge=0,
        le=1,
        description="original name; a RATIO in [0, 1]: sample_bars / expected_bars, null without data",
    )
    completeness_ratio: float | None = Field(ge=0, le=1, description="same value as completeness_percent")
    largest_gap_bars: int = Field(
        ge=0, description="most consecutive missing bars inside the sample or range"
    )
    completeness_span: ScanSpan = Field(
        description="what completeness covers: the oldest to the newest sampled candle, or the from/to range"
    )


class MissingRangeOut(BaseModel):
    from_open_time: int = Field(description="first missing bar (ms)")
    to_open_time: int = Field(description="last missing bar (ms), inclusive")
    missing_bars: int = Field(ge=1)


class ContinuityResponse(BaseModel):
    """One continuity scan (``streams.continuity.scan``), the original scanner's names."""

    symbol: str
    interval: str
    span: ScanSpan = Field(description="the scanned span")
    expected_bars: int = Field(ge=0, description="bar slots in the span")
    present_bars: int = Field(ge=0, description="closed candles stored in the span")
    missing_bars: int = Field(ge=0)
    completeness_ratio: float | None = Field(
        ge=0, le=1, description="present_bars / expected_bars; null when nothing was expected"
    )
    completeness_percent: float | None = Field(
        ge=0, le=1, description="original name, same RATIO as completeness_ratio"
    )
    gap_count: int = Field(ge=0, description="missing ranges in the span, also those beyond `gaps`")
    gaps: list[MissingRangeOut] = Field(description="missing ranges, ascending, at most `limit`")
    gaps_truncated: bool = Field(description="true when gap_count > len(gaps): raise limit or narrow from/to")
    largest_gap_bars: int = Field(ge=0)
    first_open_time: int | None = Field(description="first closed candle stored in the span")
    last_open_time: int | None = Field(description="last closed candle stored in the span")


class HistoryResponse(BaseModel):
    symbol: str
    interval: str
    count: int
    candles: list[CandleOut] = Field(description="closed candles, ascending by open_time")
    next_before_open_time: int | None = Field(
        description="pass as before_open_time for the previous (older) page; null when there is none"
    )
    next_after_open_time: int | None = Field(
        description="pass as after_open_time for the next (newer) page; null when there is none yet"
    )


class RepairOut(BaseModel):
    open_time: int
    candle: CandleOut = Field(description="the candle as it is now (revision >= 1)")
    repaired_at: int = Field(description="when the current revision was stored")


class DeltaResponse(BaseModel):
    symbol: str
    interval: str
    since: int
    candles: list[CandleOut] = Field(
        description="closed candles with open_time >= since - one interval, ascending"
    )
    repairs: list[RepairOut] = Field(
        description="candles revised (revision > 0) and stored at or after since"
    )
    truncated: bool = Field(
        description="true when the limit cut candles or repairs: call again or re-snapshot"
    )


class GapSegmentOut(BaseModel):
    segment_id: int = Field(description="open time of the first bar the segment answers for")
    segment_end: int = Field(description="open time of the last bar the segment answers for")
    from_open_time: int = Field(description="first bar still missing")
    to_open_time: int = Field(description="last bar still missing")
    missing_bars: int
    state: str = Field(description="open | repairing | repaired | exchange_gap | failed")
    detected_at: int
    repaired_at: int | None
    attempts: int
    last_error: str
    updated_at: int
    from_ts: int = Field(description="original name of from_open_time")
    to_ts: int = Field(description="original name of to_open_time")
    missing: int = Field(description="original name of missing_bars")


class GapStatusResponse(BaseModel):
    symbol: str
    interval: str
    open_segments: int = Field(description="segments not repaired (open, repairing, failed, exchange_gap)")
    open_missing_bars: int
    segments: list[GapSegmentOut] = Field(description="ascending by segment_id")


class HealthCheck(BaseModel):
    status: HealthStatus
    value: float | None = Field(default=None, description="the measured figure, in `unit`")
    unit: str | None = None
    threshold: float | None = Field(default=None, description="above this the check is degraded")
    detail: str = ""


class ExtendedHealthResponse(BaseModel):
    status: HealthStatus = Field(description="the worst check; HTTP 503 when down")
    checked_at: int
    checks: dict[str, HealthCheck] = Field(
        description="broker, clickhouse, ingestion_lag, topology_lag, open_gaps, exchange_gaps, live_events"
    )


class SnapshotMeta(BaseModel):
    earliest_open_time: int | None
    latest_open_time: int | None
    count: int


class WsSnapshot(BaseModel):
    """First message on ``/ws/ohlcv`` (and again after a resume that cannot be served)."""

    type: Literal["snapshot"] = "snapshot"
    symbol: str
    interval: str
    seq: int = Field(description="last event seq the snapshot includes; live events follow from seq + 1")
    candles: list[CandleOut] = Field(description="recent closed candles, ascending")
    meta: SnapshotMeta
    reason: str | None = Field(
        default=None,
        description="why a snapshot replaced a resume: since_seq_ahead | since_seq_too_old | "
        "since_seq_expired | sequence_gap; null on a plain connect",
    )


class FeatureHistoryResponse(BaseModel):
    symbol: str
    interval: str
    count: int
    rows: list[FeatureRow] = Field(
        description="feature rows (feature_snapshots FINAL), ascending by open_time"
    )
    next_before_open_time: int | None = Field(
        description="pass as before_open_time for the previous (older) page; null when there is none"
    )
    next_after_open_time: int | None = Field(
        description="pass as after_open_time for the next (newer) page; null when there is none yet"
    )


class FeatureDriftOut(BaseModel):
    name: str
    recent_mean: float | None
    reference_mean: float | None
    reference_std: float | None = Field(description="sample standard deviation (ddof 1) of the reference")
    recent_n: int = Field(description="non-null values in the recent window")
    reference_n: int
    z: float | None = Field(
        description="(recent_mean - reference_mean) / (reference_std / sqrt(recent_n)); "
        "null when the reference has no spread or either side has fewer than 2 values"
    )
    drifted: bool = Field(description="|z| above the threshold (zero spread: the means differ)")


class WindowSpan(BaseModel):
    from_open_time: int
    to_open_time: int


class FeatureDriftResponse(BaseModel):
    symbol: str
    interval: str
    status: Literal["ok", "drift", "insufficient"] = Field(
        description="insufficient: fewer than 2 x window rows with a complete window are stored"
    )
    window: int = Field(description="rows per side of the comparison")
    threshold: float = Field(description="DRIFT_Z_THRESHOLD")
    complete_rows: int = Field(description="complete-window rows read (at most 2 x window)")
    recent: WindowSpan | None = Field(description="open times of the newest window")
    reference: WindowSpan | None = Field(description="open times of the window before it")
    drifted: list[str] = Field(description="names of the drifted features")
    features: list[FeatureDriftOut]
