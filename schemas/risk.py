"""Risk contracts: the limits (``PUT /api/risk/limits``, ``risk_limits``) and the events of
``risk.events`` (``decision``, ``fill``, ``mark``), one stream's simulated book each."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["enter", "exit", "stop", "hold", "refused"]


class RiskLimits(BaseModel):
    """What a book may do. A change takes effect from the bars opening at or after its
    ``effective_from`` (``risk_limits``), in the stream and in the backtest alike."""

    model_config = ConfigDict(extra="forbid")

    max_position_notional: float = Field(
        default=10_000.0, gt=0, description="largest position, quote currency"
    )
    max_total_exposure: float = Field(
        default=50_000.0,
        gt=0,
        description="all books' committed exposure (each position at its last mark, plus buys decided and "
        "not yet filled) that an entry may not take the account past, quote currency",
    )
    max_daily_loss: float = Field(
        default=500.0, gt=0, description="loss since the UTC day's first mark that stops the book for the day"
    )
    max_drawdown: float = Field(
        default=0.2, gt=0, lt=1, description="drawdown from peak equity (fraction) at which entries halt"
    )
    stop_loss_pct: float = Field(default=0.02, gt=0, lt=1, description="a close this far below entry: stop")
    cooldown_bars: int = Field(default=15, ge=0, le=100_000, description="bars without entries after a stop")
    fee_bps: float = Field(default=10.0, ge=0, le=1000, description="fee on each fill's notional, bps")
    slippage_bps: float = Field(default=5.0, ge=0, le=1000, description="fill price worse than the open, bps")


class RiskDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["decision"] = "decision"
    symbol: str
    interval: str
    open_time: int = Field(description="the scored bar")
    outcome: Outcome
    reason: str = Field(description="why: model_long, model_flat, window_incomplete, cooldown, ...")
    probability: float
    model_id: str
    position_qty: float = Field(description="the position when deciding")
    limits_from: int = Field(description="effective_from of the limits applied (0: the defaults)")


class RiskFill(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["fill"] = "fill"
    symbol: str
    interval: str
    open_time: int = Field(description="the bar at whose open the order filled")
    decided_at: int = Field(description="open time of the bar whose decision it executes")
    side: Literal["buy", "sell"]
    reason: str
    qty: float
    price: float = Field(description="the open, worse by the slippage")
    fee: float
    cash_after: float
    realized_pnl: float = Field(description="for a sell: proceeds less fees less the position's cost")


class RiskMark(BaseModel):
    """The book after a bar: marked at its close."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["mark"] = "mark"
    symbol: str
    interval: str
    open_time: int
    close: float
    cash: float
    position_qty: float
    entry_price: float | None
    exposure: float = Field(description="position_qty x close")
    equity: float = Field(description="cash + exposure")
    peak_equity: float
    drawdown: float = Field(description="1 - equity / peak_equity")
    utilization: float = Field(description="exposure / max_position_notional")
    day_start_equity: float
    cooldown_left: int
    pending: str | None = Field(description="the order for the next bar's open: buy, sell or none")
    account_exposure: float = Field(
        description="every book's committed exposure after this decision (max_total_exposure's measure)"
    )
