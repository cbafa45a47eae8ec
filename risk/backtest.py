"""The batch backtest: the risk rules replayed over the stored scores and candles, written apart
from the stream's book (``topologies.risk_logic``) so that each checks the other.

Input: each bar's first score (``model_inference_log``, lowest ``score_version``; a later
version is a re-score the stream passes over), in the order they were issued (``scored_at``,
then open time), a bar opening at or behind one already taken passed over as the stream does;
prices from ``ohlcv_candles`` FINAL (the open a fill takes, the close a mark takes); limits
from ``risk_limits`` by ``effective_from`` (else the defaults). Rules: ``topologies.risk_logic``'s
docstring, which this module implements again in its own terms.

Output: the fills, the equity curve (one point per bar taken), and the summary
``ohlcv backtest`` prints: trades (round trips), total return, max drawdown, Sharpe (per-bar
returns, annualised by the bars in a year), fees.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
from clickhouse_connect.driver.client import Client

from schemas.intervals import interval_ms
from schemas.risk import RiskLimits

_SCORES = (
    "SELECT toUnixTimestamp64Milli(open_time) AS t, probability, decision, window_complete, model_id, "
    "toUnixTimestamp64Milli(scored_at) AS issued FROM model_inference_log "
    "WHERE symbol = {s:String} AND interval = {i:String} "
    "AND open_time >= fromUnixTimestamp64Milli({a:Int64}) "
    "AND open_time < fromUnixTimestamp64Milli({b:Int64}) "
    "ORDER BY open_time, score_version LIMIT 1 BY open_time"
)
_CANDLES = (
    "SELECT toUnixTimestamp64Milli(open_time) AS t, open, close FROM ohlcv_candles FINAL "
    "WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
    "AND open_time >= fromUnixTimestamp64Milli({a:Int64}) AND open_time < fromUnixTimestamp64Milli({b:Int64})"
)


@dataclass
class BacktestResult:
    symbol: str
    interval: str
    bars: int
    fills: list[dict[str, Any]]
    curve: pd.DataFrame  #: open_time, equity, cash, qty, drawdown
    decisions: dict[str, int]
    initial_equity: float
    summary: dict[str, Any] = field(default_factory=dict)


def _frame(client: Client, sql: str, params: dict[str, Any], columns: tuple[str, ...]) -> pd.DataFrame:
    res = client.query(sql, parameters=params)
    return pd.DataFrame(res.result_rows, columns=list(columns))  # named even when empty


def backtest(
    client: Client,
    symbol: str,
    interval: str,
    *,
    start_ms: int | None,
    end_ms: int | None,
    initial_equity: float,
    default_limits: RiskLimits,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestResult:
    from risk.store import limit_table

    p = {"s": symbol, "i": interval, "a": start_ms or 0, "b": end_ms or 2**62}
    scores = _frame(
        client, _SCORES, p, ("t", "probability", "decision", "window_complete", "model_id", "issued")
    )
    candles = _frame(client, _CANDLES, p, ("t", "open", "close"))
    bars = scores.merge(candles, on="t", how="inner").sort_values(["issued", "t"], kind="stable")
    changes = limit_table(client)

    def limits_for(t: int) -> RiskLimits:
        applicable = [lim for eff, lim in changes if eff <= t]
        return applicable[-1] if applicable else default_limits

    cash, units, entry, cost = initial_equity, 0.0, math.nan, 0.0
    peak, last_equity, day_start, day = initial_equity, initial_equity, initial_equity, -1
    cooldown, order, order_why, order_bar = 0, "", "", 0
    newest = -(2**62)
    fills: list[dict[str, Any]] = []
    points: list[tuple[int, float, float, float, float]] = []
    counts: dict[str, int] = {}
    n = len(bars)
    for k, bar in enumerate(bars.itertuples(index=False)):
        if progress is not None and k % 5000 == 0:
            progress(k, n)
        t = int(bar.t)
        if t <= newest:
            continue
        newest = t
        lim = limits_for(t)
        fee_rate = lim.fee_bps / 1e4
        if order == "buy":
            px = bar.open * (1 + lim.slippage_bps / 1e4)
            spend = min(lim.max_position_notional, cash / (1 + fee_rate))
            units = spend / px
            fee = units * px * fee_rate
            cash = cash - (units * px + fee)
            entry, cost = px, units * px + fee
            fills.append({"open_time": t, "decided_at": order_bar, "side": "buy", "reason": order_why,
                          "qty": units, "price": px, "fee": fee, "cash_after": cash,
                          "realized_pnl": 0.0})  # fmt: skip
        elif order == "sell":
            px = bar.open * (1 - lim.slippage_bps / 1e4)
            fee = units * px * fee_rate
            cash = cash + units * px - fee
            fills.append({"open_time": t, "decided_at": order_bar, "side": "sell", "reason": order_why,
                          "qty": units, "price": px, "fee": fee, "cash_after": cash,
                          "realized_pnl": units * px - fee - cost})  # fmt: skip
            units, entry, cost = 0.0, math.nan, 0.0
        order = ""
        if t // 86_400_000 != day:
            day, day_start = t // 86_400_000, last_equity
        cooldown = max(0, cooldown - 1)
        equity = cash + units * bar.close
        last_equity = equity
        peak = max(peak, equity)
        dd = 1 - equity / peak
        lost = day_start - equity
        long_now, long_wanted = units > 0, bool(bar.decision)
        if long_now and bar.close <= entry * (1 - lim.stop_loss_pct):
            verdict, order, order_why, cooldown = "stop", "sell", "stop_loss", lim.cooldown_bars
        elif long_now and lost >= lim.max_daily_loss:
            verdict, order, order_why, cooldown = "stop", "sell", "max_daily_loss", lim.cooldown_bars
        elif long_now is long_wanted:
            verdict = "hold"
        elif not bar.window_complete:
            verdict = "refused"
        elif long_now:
            verdict, order, order_why = "exit", "sell", "model_flat"
        elif cooldown > 0 or dd >= lim.max_drawdown or lost >= lim.max_daily_loss:
            verdict = "refused"
        else:
            verdict, order, order_why = "enter", "buy", "model_long"
        if order:
            order_bar = t
        counts[verdict] = counts.get(verdict, 0) + 1
        points.append((t, equity, cash, units, dd))
    curve = pd.DataFrame(points, columns=["open_time", "equity", "cash", "qty", "drawdown"])
    out = BacktestResult(symbol, interval, len(curve), fills, curve, counts, initial_equity)
    out.summary = summarize(out, interval)
    return out


def summarize(r: BacktestResult, interval: str) -> dict[str, Any]:
    eq = r.curve["equity"]
    rets = eq.pct_change().dropna()
    per_year = 365 * 86_400_000 / interval_ms(interval)
    sd = float(rets.std()) if len(rets) > 1 else 0.0
    final = float(eq.iloc[-1]) if len(eq) else r.initial_equity
    return {
        "bars": r.bars,
        "fills": len(r.fills),
        "trades": sum(1 for f in r.fills if f["side"] == "sell"),
        "final_equity": round(final, 2),
        "return_pct": round(100 * (final / r.initial_equity - 1), 4),
        "max_drawdown_pct": round(100 * float(r.curve["drawdown"].max()), 4) if len(eq) else 0.0,
        "sharpe": round(float(rets.mean()) / sd * math.sqrt(per_year), 3) if sd > 0 else None,
        "fees": round(sum(f["fee"] for f in r.fills), 2),
        "decisions": dict(sorted(r.decisions.items())),
    }
