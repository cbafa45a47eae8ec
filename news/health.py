"""The health of a news source, from its polls (``news_polls``) and their dedup verdicts
(``news_entries``), newest first. Names and settings from the original system.

Per poll with entries, the **dedup ratio** = unique / raw entries (a 304 or an error has none
and is skipped). A source is

- **stalled** when its last unique article is older than ``NEWS_SOURCE_STALL_THRESHOLD_SEC``
  (or it never had one and has been polled that long);
- in **low_ratio** anomaly after ``NEWS_DEDUP_RATIO_STREAK`` consecutive polls below
  ``NEWS_DEDUP_MIN_RATIO``;
- in **volatility** anomaly when the sample standard deviation of its last
  ``NEWS_DEDUP_VOLATILITY_WINDOW`` ratios is at least ``NEWS_DEDUP_VOLATILITY_THRESHOLD``.

The **health score** in [0, 1] starts at 1 and loses 0.4 when stalled, 0.2 per anomaly, 0.1 per
consecutive error (at most 0.4), and 0.2 while in backoff; it never goes below 0.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class HealthConfig:
    stall_s: float = 900.0  #: NEWS_SOURCE_STALL_THRESHOLD_SEC
    min_ratio: float = 0.15  #: NEWS_DEDUP_MIN_RATIO
    ratio_streak: int = 3  #: NEWS_DEDUP_RATIO_STREAK
    volatility_window: int = 10  #: NEWS_DEDUP_VOLATILITY_WINDOW
    volatility_threshold: float = 0.25  #: NEWS_DEDUP_VOLATILITY_THRESHOLD


@dataclass(frozen=True, slots=True)
class Poll:
    at: int  #: ms
    status: str
    raw: int
    unique: int
    error: str = ""
    error_streak: int = 0
    retry_in_s: float | None = None
    latency_ms: float | None = None
    http_status: int | None = None


@dataclass(frozen=True)
class SourceHealth:
    source: str
    polls: int
    last_poll_at: int | None
    last_status: str | None
    last_error: str | None
    last_error_at: int | None
    error_streak: int
    backoff_remaining_s: float
    last_fetch_latency_ms: float | None
    dedup_last_ratio: float | None
    dedup_avg_ratio: float | None
    dedup_volatility: float | None
    low_ratio_streak: int
    last_unique_at: int | None
    stalled: bool
    anomalies: list[str] = field(default_factory=list)
    health_score: float = 1.0
    history: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def source_health(source: str, polls: Sequence[Poll], last_unique_at: int | None, now_ms: int,
                  cfg: HealthConfig, include_history: bool = False) -> SourceHealth:  # fmt: skip
    """``polls`` newest first."""
    ratios = [p.unique / p.raw for p in polls if p.raw > 0]
    streak = 0
    for r in ratios:
        if r >= cfg.min_ratio:
            break
        streak += 1
    window = ratios[: cfg.volatility_window]
    vol = statistics.stdev(window) if len(window) >= 2 else None
    anomalies = []
    if streak >= cfg.ratio_streak:
        anomalies.append("low_ratio")
    if vol is not None and vol >= cfg.volatility_threshold:
        anomalies.append("volatility")
    first_poll = polls[-1].at if polls else None
    since = last_unique_at if last_unique_at is not None else first_poll
    stalled = since is not None and now_ms - since > cfg.stall_s * 1000
    last = polls[0] if polls else None
    errs = next((p for p in polls if p.error), None)
    streak_err = last.error_streak if last else 0
    backoff = 0.0
    if last is not None and last.retry_in_s:
        backoff = max(0.0, last.retry_in_s - (now_ms - last.at) / 1000)
    score = (
        1.0
        - (0.4 if stalled else 0)
        - 0.2 * len(anomalies)
        - min(0.4, 0.1 * streak_err)
        - (0.2 if backoff else 0)
    )
    return SourceHealth(
        source=source,
        polls=len(polls),
        last_poll_at=last.at if last else None,
        last_status=last.status if last else None,
        last_error=errs.error if errs else None,
        last_error_at=errs.at if errs else None,
        error_streak=streak_err,
        backoff_remaining_s=round(backoff, 3),
        last_fetch_latency_ms=last.latency_ms if last else None,
        dedup_last_ratio=ratios[0] if ratios else None,
        dedup_avg_ratio=sum(ratios) / len(ratios) if ratios else None,
        dedup_volatility=vol,
        low_ratio_streak=streak,
        last_unique_at=last_unique_at,
        stalled=stalled,
        anomalies=anomalies,
        health_score=round(max(0.0, score), 3),
        history=[asdict(p) for p in polls] if include_history else None,
    )
