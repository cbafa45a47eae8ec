"""The real rows the risk tests trade on: XRP 1m bars around the dump's first outage, and a score
per bar from a fixed rule on the 5-bar return (the engine does not care which model)."""

from __future__ import annotations

import math
from typing import Any

from schemas.klines import Candle
from schemas.risk import RiskLimits
from tests.topologies.helpers import PlainState, xrp_candles
from topologies.feature_logic import FeatureStream

LIMITS = RiskLimits(max_position_notional=5_000, max_daily_loss=60, max_drawdown=0.03, stop_loss_pct=0.004,
                    cooldown_bars=20, fee_bps=7.5, slippage_bps=2)  # fmt: skip
EQUITY = 10_000.0


def outage_span() -> tuple[Candle, ...]:
    """8,000 real bars around the dump's first outage (bars missing from the exchange)."""
    cs = xrp_candles()
    gap = next(k for k in range(1, len(cs)) if cs[k].open_time - cs[k - 1].open_time > 60_000)
    return cs[max(0, gap - 4000) : gap + 4000]


def rule_scores(
    cs: tuple[Candle, ...], issued: int = 1_700_000_000_000, stride: int = 1
) -> list[dict[str, Any]]:
    """A score per bar of ``cs`` (one stream), the k-th issued (``scored_at``) at ``issued + k x stride``."""
    fs, state = FeatureStream(), PlainState()
    rows = fs.apply_many(list(cs), ["new"] * len(cs), state)
    out = []
    for k, r in enumerate(rows):
        z = r["ret_5"] if r["ret_5"] is not None else 0.0
        p = 1 / (1 + math.exp(-600 * z))
        out.append({
            "symbol": cs[0].symbol, "interval": cs[0].interval, "open_time": r["open_time"],
            "score_version": 1,
            "feature_version": 1, "feature_set_version": 1, "model_id": "rule-ret5", "model_version": 1,
            "probability": p, "decision": p >= 0.5, "threshold": 0.5,
            "window_complete": r["window_complete"], "window_has_repair": False,
            "bars_missing_in_window": r["bars_missing_in_window"], "reason": "new",
            "event_seq": k + 1, "feature_emitted_at": 1_700_000_000_000 + k,
            "scored_at": issued + k * stride, "bar_open": r["open"], "bar_close": r["close"],
        })  # fmt: skip
    return out
