"""Source health on a timeline of polls (``news.health``): stall, the low-ratio streak, the
volatility anomaly, backoff and the score, each computed by hand here."""

from __future__ import annotations

import statistics

from news.health import HealthConfig, Poll, source_health

MIN = 60_000
CFG = HealthConfig(
    stall_s=900, min_ratio=0.15, ratio_streak=3, volatility_window=4, volatility_threshold=0.25
)


def _polls(ratios: list[float | None], start: int = 0, every: int = MIN) -> list[Poll]:
    """Newest first; None is a poll with no entries (a 304)."""
    out = []
    for k, r in enumerate(ratios):
        at = start + (len(ratios) - 1 - k) * every
        out.append(Poll(at, "not_modified", 0, 0) if r is None else Poll(at, "ok", 20, round(20 * r)))
    return out


def test_a_healthy_source() -> None:
    polls = _polls([0.5, 0.4, None, 0.5])
    h = source_health("s", polls, last_unique_at=polls[0].at, now_ms=polls[0].at + MIN, cfg=CFG)
    assert (h.stalled, h.anomalies, h.low_ratio_streak, h.health_score) == (False, [], 0, 1.0)
    assert h.dedup_last_ratio == 0.5 and h.dedup_avg_ratio == (0.5 + 0.4 + 0.5) / 3  # the 304 has no ratio


def test_low_ratio_streak_and_stall() -> None:
    polls = _polls([0.1, 0.05, 0.0, 0.6])  # three polls below 0.15, newest first
    h = source_health("s", polls, last_unique_at=polls[-1].at, now_ms=polls[0].at + 20 * MIN, cfg=CFG)
    assert h.low_ratio_streak == 3 and "low_ratio" in h.anomalies
    assert h.stalled  # the last unique story is 23 minutes old, over 15
    vol = statistics.stdev([0.1, 0.05, 0.0, 0.6])
    assert h.dedup_volatility == vol and ("volatility" in h.anomalies) == (vol >= 0.25)
    assert h.health_score == round(1 - 0.4 - 0.2 * len(h.anomalies), 3)
    # two below, then a good one: no anomaly yet
    h2 = source_health("s", _polls([0.1, 0.1, 0.5]), last_unique_at=0, now_ms=3 * MIN, cfg=CFG)
    assert h2.low_ratio_streak == 2 and "low_ratio" not in h2.anomalies


def test_volatility_over_the_window_only() -> None:
    flat_then_wild = [0.5, 0.5, 0.5, 0.5, 0.0, 1.0, 0.0, 1.0]  # the wild part is older than the window of 4
    h = source_health("s", _polls(flat_then_wild), last_unique_at=0, now_ms=8 * MIN, cfg=CFG)
    assert h.dedup_volatility == 0.0 and "volatility" not in h.anomalies
    h = source_health("s", _polls(list(reversed(flat_then_wild))), last_unique_at=0, now_ms=8 * MIN, cfg=CFG)
    assert h.dedup_volatility == statistics.stdev([1.0, 0.0, 1.0, 0.0]) and "volatility" in h.anomalies


def test_errors_and_backoff_lower_the_score() -> None:
    now = 10 * MIN
    failing = [Poll(now - MIN, "error", 0, 0, "HTTP 503", error_streak=5, retry_in_s=120.0)]
    polls = failing + _polls([0.5], start=now - 2 * MIN)
    h = source_health("s", polls, last_unique_at=now - 2 * MIN, now_ms=now, cfg=CFG)  # fmt: skip
    assert h.error_streak == 5 and h.last_error == "HTTP 503" and h.backoff_remaining_s == 60.0
    assert h.health_score == round(1 - 0.4 - 0.2, 3)  # the streak counts at most 0.4
    later = source_health("s", failing, last_unique_at=now - 2 * MIN, now_ms=now + 5 * MIN, cfg=CFG)
    assert later.backoff_remaining_s == 0.0


def test_a_source_that_never_had_a_story_stalls_after_the_threshold() -> None:
    polls = _polls([0.0, 0.0], start=0)
    assert not source_health("s", polls, None, now_ms=10 * MIN, cfg=CFG).stalled
    assert source_health("s", polls, None, now_ms=16 * MIN, cfg=CFG).stalled
