"""The risk step, pure: one stream's simulated book, advanced by its score rows.

For each score row of a new bar (``open_time`` past the last one the book took; a re-score of
a bar already taken, or a bar arriving behind the book, is passed over: what was traded on it
stays traded), in this order:

1. **fill** the order decided on the previous bar at this bar's open: a buy at
   ``open x (1 + slippage)`` of ``min(max_position_notional, cash / (1 + fee))`` worth, a sell of
   the whole position at ``open x (1 - slippage)``; the fee is ``fee_bps`` of the notional;
2. a new UTC day starts its daily loss from the last mark's equity;
3. **mark** at the close: equity = cash + qty x close, peak, drawdown, exposure, utilization;
4. **decide** for the next bar's open: a held position is stopped (``stop``) when the close is
   ``stop_loss_pct`` below entry or the day has lost ``max_daily_loss``, which starts a cooldown
   of ``cooldown_bars``; otherwise the model's decision (long when ``probability >= threshold``)
   enters or exits, refused with a reason when the score's window was incomplete
   (``window_incomplete``: gap-aware, entries and exits alike), and for entries during a
   cooldown, at ``max_drawdown``, after the day's ``max_daily_loss``, or when the entry's notional
   would take the account past ``max_total_exposure``. Every bar gives one decision (``hold``
   when nothing changes).

The account: books share one limit, ``max_total_exposure``, on what they have committed
(``committed``: the position at the book's last mark, plus the notional of a buy decided and
not yet filled). An entry is checked against the other books as they stand when it is decided
(``Account``: the books one risk process holds, in the order their scores arrive, the order
they were issued), so the same rows in the same order give the same decisions; an entry's own
notional is ``min(max_position_notional, cash / (1 + fee))``, what the fill will spend. The limit
refuses entries only: a held position that rises past it is not sold.

The limits are those with the latest ``effective_from`` at or before the bar's open time.
"""

from __future__ import annotations

from typing import Any

from schemas.risk import RiskLimits

DAY_MS = 86_400_000


def new_book(initial_equity: float) -> dict[str, Any]:
    return {
        "cash": float(initial_equity), "qty": 0.0, "entry_price": None, "cost": 0.0,
        "peak_equity": float(initial_equity), "equity": float(initial_equity),
        "day": None, "day_start_equity": float(initial_equity), "cooldown_left": 0,
        "pending": None, "pending_reason": None, "decided_at": None, "last_open_time": None,
        "exposure": 0.0, "pending_notional": 0.0,
    }  # fmt: skip


def committed(book: dict[str, Any]) -> float:
    """What a book holds against the account's ``max_total_exposure``."""
    return float(book.get("exposure", 0.0)) + float(book.get("pending_notional", 0.0))


class Account:
    """The books one risk process holds, by ``SYMBOL:interval``: each one's ``committed``."""

    def __init__(self) -> None:
        self.committed: dict[str, float] = {}
        self.loaded = False

    def load(self, books: dict[str, dict[str, Any]]) -> None:
        """Seed from the stored books (``risk_state``), once per process."""
        for key, book in books.items():
            self.committed.setdefault(key, committed(book))
        self.loaded = True

    def others(self, key: str) -> float:
        return sum(v for k, v in self.committed.items() if k != key)

    def put(self, key: str, book: dict[str, Any]) -> None:
        self.committed[key] = committed(book)


def step(
    book: dict[str, Any], score: dict[str, Any], limits: RiskLimits, limits_from: int, others: float = 0.0
) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """Advance ``book`` (in place) by one score row; returns (events, the book) or None when
    the row is passed over. ``others``: the other books' ``committed`` (``Account.others``)."""
    t = int(score["open_time"])
    if book["last_open_time"] is not None and t <= book["last_open_time"]:
        return None
    sym, iv = score["symbol"], score["interval"]
    events: list[dict[str, Any]] = []
    fee_rate, slip = limits.fee_bps / 10_000, limits.slippage_bps / 10_000
    o, c = float(score["bar_open"]), float(score["bar_close"])
    if book["pending"] == "buy":
        price = o * (1 + slip)
        notional = min(limits.max_position_notional, book["cash"] / (1 + fee_rate))
        qty = notional / price
        fee = qty * price * fee_rate
        book["cash"] -= qty * price + fee
        book["qty"], book["entry_price"], book["cost"] = qty, price, qty * price + fee
        events.append(_fill(sym, iv, t, book, "buy", qty, price, fee, 0.0))
    elif book["pending"] == "sell":
        qty, price = book["qty"], o * (1 - slip)
        fee = qty * price * fee_rate
        proceeds = qty * price - fee
        book["cash"] += proceeds
        pnl = proceeds - book["cost"]
        book["qty"], book["entry_price"], book["cost"] = 0.0, None, 0.0
        events.append(_fill(sym, iv, t, book, "sell", qty, price, fee, pnl))
    book["pending"] = book["pending_reason"] = None
    day = t // DAY_MS
    if book["day"] != day:
        book["day"], book["day_start_equity"] = day, book["equity"]
    if book["cooldown_left"] > 0:
        book["cooldown_left"] -= 1
    exposure = book["qty"] * c
    equity = book["cash"] + exposure
    book["equity"] = equity
    book["peak_equity"] = max(book["peak_equity"], equity)
    drawdown = 1 - equity / book["peak_equity"]
    day_loss = book["day_start_equity"] - equity
    held = book["qty"] > 0
    want = bool(score["decision"])
    entry = min(limits.max_position_notional, book["cash"] / (1 + fee_rate))  # what a buy would spend
    if held and c <= book["entry_price"] * (1 - limits.stop_loss_pct):
        outcome, reason = "stop", "stop_loss"
    elif held and day_loss >= limits.max_daily_loss:
        outcome, reason = "stop", "max_daily_loss"
    elif held == want:
        outcome, reason = "hold", "model_long" if want else "model_flat"
    elif not score["window_complete"]:
        outcome, reason = "refused", "window_incomplete"
    elif held:
        outcome, reason = "exit", "model_flat"
    elif book["cooldown_left"] > 0:
        outcome, reason = "refused", "cooldown"
    elif drawdown >= limits.max_drawdown:
        outcome, reason = "refused", "max_drawdown"
    elif day_loss >= limits.max_daily_loss:
        outcome, reason = "refused", "max_daily_loss"
    elif others + entry > limits.max_total_exposure:
        outcome, reason = "refused", "max_total_exposure"
    else:
        outcome, reason = "enter", "model_long"
    if outcome == "stop":
        book["cooldown_left"] = limits.cooldown_bars
    if outcome in ("enter", "exit", "stop"):
        book["pending"] = "buy" if outcome == "enter" else "sell"
        book["pending_reason"], book["decided_at"] = reason, t
    book["exposure"] = exposure
    book["pending_notional"] = entry if outcome == "enter" else 0.0
    book["last_open_time"] = t
    events.append({
        "type": "decision", "symbol": sym, "interval": iv, "open_time": t, "outcome": outcome,
        "reason": reason, "probability": float(score["probability"]), "model_id": score["model_id"],
        "position_qty": book["qty"], "limits_from": limits_from,
    })  # fmt: skip
    events.append({
        "type": "mark", "symbol": sym, "interval": iv, "open_time": t, "close": c, "cash": book["cash"],
        "position_qty": book["qty"], "entry_price": book["entry_price"], "exposure": exposure,
        "equity": equity, "peak_equity": book["peak_equity"], "drawdown": drawdown,
        "utilization": exposure / limits.max_position_notional, "day_start_equity": book["day_start_equity"],
        "cooldown_left": book["cooldown_left"], "pending": book["pending"],
        "account_exposure": others + committed(book),
    })  # fmt: skip
    return events, book


def _fill(sym: str, iv: str, t: int, book: dict[str, Any], side: str, qty: float, price: float,
          fee: float, pnl: float) -> dict[str, Any]:  # fmt: skip
    return {
        "type": "fill", "symbol": sym, "interval": iv, "open_time": t, "decided_at": book["decided_at"],
        "side": side, "reason": book["pending_reason"], "qty": qty, "price": price, "fee": fee,
        "cash_after": book["cash"], "realized_pnl": pnl,
    }  # fmt: skip


def limits_at(table: list[tuple[int, RiskLimits]], t: int, default: RiskLimits) -> tuple[RiskLimits, int]:
    """The limits in force for a bar opening at ``t``: ``table`` is (effective_from, limits),
    ascending."""
    chosen, since = default, 0
    for eff, lim in table:
        if eff > t:
            break
        chosen, since = lim, eff
    return chosen, since
