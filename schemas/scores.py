"""Score rows: the contract of ``ohlcv.scores`` and of ``model_inference_log``.

One score per feature row the scoring topology saw while its stream had a production model:
the probability of label 1 (``training.labels``: the close ``LABEL_HORIZON_BARS`` later is
higher) from that model, the decision at ``INFERENCE_PROB_THRESHOLD``, and the feature row's gap
flags carried over. ``score_version`` is the feature row's ``feature_version``: a feature row
derived again after a repair or a late fill is scored again with a version one higher.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TABLE = "model_inference_log"
SCORE_COLUMNS: tuple[str, ...] = (
    "symbol", "interval", "open_time", "score_version", "feature_version", "feature_set_version",
    "model_id", "model_version", "probability", "decision", "threshold", "window_complete",
    "window_has_repair", "bars_missing_in_window", "reason", "event_seq", "feature_emitted_at",
    "scored_at",
)  # fmt: skip


class ScoreRow(BaseModel):
    """One score of ohlcv.scores."""

    model_config = ConfigDict(extra="forbid")

    symbol: str
    interval: str
    open_time: int = Field(description="open time of the candle whose feature row was scored, ms")
    score_version: int = Field(ge=1, description="the feature row's feature_version: +1 on each re-score")
    feature_version: int = Field(ge=1)
    feature_set_version: int = Field(ge=1)
    model_id: str = Field(description="the production model that scored the row")
    model_version: int = Field(ge=1)
    probability: float = Field(ge=0, le=1, description="P(close LABEL_HORIZON_BARS later is higher)")
    decision: bool = Field(description="probability >= threshold (long)")
    threshold: float
    window_complete: bool = Field(description="the feature row's window had no missing bar")
    window_has_repair: bool = Field(
        description="a bar in the feature row's window was repaired or late-filled"
    )
    bars_missing_in_window: int = Field(ge=0)
    reason: str = Field(description="the feature row's reason: new, repair, late_fill, gap_repaired, rebuild")
    event_seq: int = Field(ge=0, description="the candle event behind the feature row (0: a rebuild)")
    feature_emitted_at: int = Field(description="ms since epoch when the feature row was emitted")
    scored_at: int = Field(description="ms since epoch when the row was scored")
    bar_open: float = Field(description="the scored bar's open (the risk engine fills at it)")
    bar_close: float = Field(description="the scored bar's close (the risk engine marks at it)")


class ScoredRows:
    """A record's feature rows and their scores, as the features step with inline scoring hands
    them to its sink (``topologies.scoring.score_inline``): one write of each table."""

    __slots__ = ("rows", "scores")

    def __init__(self, rows: list[dict[str, Any]], scores: list[dict[str, Any]]):
        self.rows = rows
        self.scores = scores
