"""The batch backtest: the risk rules replayed over the stored scores and candles, written apart
from the stream's book (``topologies.risk_logic``) so that each checks the other.

Several streams backtest as one account (``backtest_account``): their rows merged in issue
order, each entry checked against the other books' holdings (``max_total_exposure``).

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
    refused_total_exposure: int = 0  #: entries the account's max_total_exposure refused
    summary: dict[str, Any] = field(default_factory=dict)


def _frame(client: Client, sql: str, params: dict[str, Any], columns: tuple[str, ...]) -> pd.DataFrame:
    res = client.query(sql, parameters=params)
    return pd.DataFrame(res.result_rows, columns=list(columns))  # named even when empty


class _Ledger:
    """One stream's simulated account in the backtest's own terms."""

    def __init__(self, equity: float):
        self.cash, self.units, self.entry, self.cost = equity, 0.0, math.nan, 0.0
        self.peak = self.last_equity = self.day_start = equity
        self.day, self.cooldown, self.newest = -1, 0, -(2**62)
        self.order, self.order_why, self.order_bar, self.reserved = "", "", 0, 0.0
        self.held_value = 0.0  # units x the last close
        self.fills: list[dict[str, Any]] = []
        self.points: list[tuple[int, float, float, float, float]] = []
        self.counts: dict[str, int] = {}
        self.over_total = 0  # entries refused for the account's max_total_exposure


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
    """One stream's backtest (an account of one book)."""
    return backtest_account(
        client, [(symbol, interval)], start_ms=start_ms, end_ms=end_ms, initial_equity=initial_equity,
        default_limits=default_limits, progress=progress,
    )[f"{symbol}:{interval}"]  # fmt: skip


def backtest_account(
    client: Client,
    streams: list[tuple[str, str]],
    *,
    start_ms: int | None,
    end_ms: int | None,
    initial_equity: float,
    default_limits: RiskLimits,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, BacktestResult]:
    """The books of ``streams`` traded together, one account: the scores of all of them in the
    order they were issued (``scored_at``, then stream, then open time), an entry refused when
    the other books' holdings (position at its last close, plus a buy decided and not yet
    filled) and the entry would pass ``max_total_exposure``. By ``SYMBOL:interval``."""
    from risk.store import limit_table

    frames = []
    for symbol, interval in streams:
        p = {"s": symbol, "i": interval, "a": start_ms or 0, "b": end_ms or 2**62}
        scores = _frame(
            client, _SCORES, p, ("t", "probability", "decision", "window_complete", "model_id", "issued")
        )
        candles = _frame(client, _CANDLES, p, ("t", "open", "close"))
        frames.append(scores.merge(candles, on="t", how="inner").assign(stream=f"{symbol}:{interval}"))
    bars = pd.concat(frames, ignore_index=True).sort_values(["issued", "stream", "t"], kind="stable")
    changes = limit_table(client)

    def limits_for(t: int) -> RiskLimits:
        applicable = [lim for eff, lim in changes if eff <= t]
        return applicable[-1] if applicable else default_limits

    books = {f"{s}:{i}": _Ledger(initial_equity) for s, i in streams}
    n = len(bars)
    for k, bar in enumerate(bars.itertuples(index=False)):
        if progress is not None and k % 5000 == 0:
            progress(k, n)
        b, t = books[bar.stream], int(bar.t)
        if t <= b.newest:
            continue
        b.newest = t
        lim = limits_for(t)
        fee_rate = lim.fee_bps / 1e4
        if b.order == "buy":
            px = bar.open * (1 + lim.slippage_bps / 1e4)
            spend = min(lim.max_position_notional, b.cash / (1 + fee_rate))
            b.units = spend / px
            fee = b.units * px * fee_rate
            b.cash = b.cash - (b.units * px + fee)
            b.entry, b.cost = px, b.units * px + fee
            b.fills.append({"open_time": t, "decided_at": b.order_bar, "side": "buy", "reason": b.order_why,
                            "qty": b.units, "price": px, "fee": fee, "cash_after": b.cash,
                            "realized_pnl": 0.0})  # fmt: skip
        elif b.order == "sell":
            px = bar.open * (1 - lim.slippage_bps / 1e4)
            fee = b.units * px * fee_rate
            b.cash = b.cash + b.units * px - fee
            b.fills.append({"open_time": t, "decided_at": b.order_bar, "side": "sell", "reason": b.order_why,
                            "qty": b.units, "price": px, "fee": fee, "cash_after": b.cash,
                            "realized_pnl": b.units * px - fee - b.cost})  # fmt: skip
            b.units, b.entry, b.cost = 0.0, math.nan, 0.0
        b.order, b.reserved = "", 0.0
        if t // 86_400_000 != b.day:
            b.day, b.day_start = t // 86_400_000, b.last_equity
        b.cooldown = max(0, b.cooldown - 1)
        b.held_value = b.units * bar.close
        equity = b.cash + b.held_value
        b.last_equity = equity
        b.peak = max(b.peak, equity)
        dd = 1 - equity / b.peak
        lost = b.day_start - equity
        long_now, long_wanted = b.units > 0, bool(bar.decision)
        spend_next = min(lim.max_position_notional, b.cash / (1 + fee_rate))
        elsewhere = sum(o.held_value + o.reserved for key, o in books.items() if key != bar.stream)
        if long_now and bar.close <= b.entry * (1 - lim.stop_loss_pct):
            verdict, b.order, b.order_why, b.cooldown = "stop", "sell", "stop_loss", lim.cooldown_bars
        elif long_now and lost >= lim.max_daily_loss:
            verdict, b.order, b.order_why, b.cooldown = "stop", "sell", "max_daily_loss", lim.cooldown_bars
        elif long_now is long_wanted:
            verdict = "hold"
        elif not bar.window_complete:
            verdict = "refused"
        elif long_now:
            verdict, b.order, b.order_why = "exit", "sell", "model_flat"
        elif b.cooldown > 0 or dd >= lim.max_drawdown or lost >= lim.max_daily_loss:
            verdict = "refused"
        elif elsewhere + spend_next > lim.max_total_exposure:
            verdict = "refused"
            b.over_total += 1
        else:
            verdict, b.order, b.order_why, b.reserved = "enter", "buy", "model_long", spend_next
        if b.order:
            b.order_bar = t
        b.counts[verdict] = b.counts.get(verdict, 0) + 1
        b.points.append((t, equity, b.cash, b.units, dd))
    out: dict[str, BacktestResult] = {}
    for symbol, interval in streams:
        b = books[f"{symbol}:{interval}"]
        curve = pd.DataFrame(b.points, columns=["open_time", "equity", "cash", "qty", "drawdown"])
        r = BacktestResult(symbol, interval, len(curve), b.fills, curve, b.counts, initial_equity,
                           refused_total_exposure=b.over_total)  # fmt: skip
        r.summary = summarize(r, interval)
        out[f"{symbol}:{interval}"] = r
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
        "refused_total_exposure": r.refused_total_exposure,
    }
