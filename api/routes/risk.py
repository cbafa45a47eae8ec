"""Risk routes (API key), names from the original system: ``/api/risk/state`` (each stream's
book), ``/api/risk/positions``, ``/api/risk/fills`` (cursor paging), ``/api/risk/equity`` (the
curve), ``/api/risk/limits`` (GET; PUT validates and records a change, in force from the next
bar), and the trading activity summary ``/api/inference/activity/summary``.

Activity (the original's heartbeat panel): ``decisions_1m`` / ``decisions_5m`` count the score
rows issued (``scored_at``) in the last 1 / 5 minutes; ``status`` is the original's colour rule:
``idle`` (grey) when ``decisions_5m`` is 0, ``warming`` (amber) below 5, ``active`` (green) at 5
or more. ``auto_loop_enabled`` is whether this deployment runs inline scoring; ``interval`` the
seconds between its reads of which model is production (scoring itself runs on every closed
candle, not on a timer).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import ApiKeyDep, SettingsDep, StreamDep
from api.errors import StoreUnavailableError
from api.reads import read_rows
from api.routes.models import BAD_BODY, ERRORS, PoolDep
from schemas.risk import RiskLimits

router = APIRouter(tags=["risk"], dependencies=[ApiKeyDep], responses=ERRORS)
_STATE = ("symbol", "interval", "open_time", "close", "cash", "position_qty", "entry_price", "exposure",
          "equity", "peak_equity", "drawdown", "utilization", "day_start_equity", "cooldown_left",
          "pending", "account_exposure")  # fmt: skip
_FILL = ("symbol", "interval", "open_time", "decided_at", "side", "reason", "qty", "price", "fee",
         "cash_after", "realized_pnl")  # fmt: skip
_TIMES = ("open_time", "decided_at")


def _select(cols: tuple[str, ...]) -> str:
    # times as ms under another name: an alias named like its column would shadow it in WHERE
    return ", ".join(f"toUnixTimestamp64Milli({c}) AS {c}_ms" if c in _TIMES else c for c in cols)


def _rows(pool: Any, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return read_rows(pool, sql, params, what="risk", times=_TIMES)


def _limits_now(pool: Any, settings: Any) -> tuple[RiskLimits, int, list[tuple[int, RiskLimits]]]:
    """The limits in force now, their effective_from, and every change (``risk_limits``)."""
    from risk.store import default_limits, limit_table
    from topologies.risk_logic import limits_at

    with pool.client() as client:
        try:
            table = limit_table(client)
        except Exception as exc:
            raise StoreUnavailableError(f"risk read failed: {exc}") from exc
    now, since = limits_at(table, int(time.time() * 1000), default_limits(settings))
    return now, since, table


@router.get("/api/risk/state")
def state(pool: PoolDep, settings: SettingsDep) -> dict[str, Any]:
    """Each stream's book after its newest bar (equity, cash, exposure, utilization, drawdown,
    peak equity, the pending order and its notional), the totals over the books, and the
    account's committed exposure against ``max_total_exposure`` (the limits in force now)."""
    books = _rows(
        pool,
        f"SELECT {_select(_STATE)}, JSONExtractFloat(book, 'pending_notional') AS pending_notional "  # noqa: S608
        "FROM risk_state FINAL ORDER BY symbol, interval, open_time DESC LIMIT 1 BY symbol, interval",
        {},
    )
    now, _, _ = _limits_now(pool, settings)
    committed = sum(b["exposure"] + b["pending_notional"] for b in books)
    return {
        "books": books,
        "equity": sum(b["equity"] for b in books),
        "exposure": sum(b["exposure"] for b in books),
        "cash": sum(b["cash"] for b in books),
        "account": {
            "committed_exposure": committed,
            "max_total_exposure": now.max_total_exposure,
            "utilization": committed / now.max_total_exposure,
        },
    }


@router.get("/api/risk/positions")
def positions(pool: PoolDep) -> list[dict[str, Any]]:
    """Each stream's open position (qty > 0): entry price, cost, the last close, value and
    unrealized P&L at it."""
    return _rows(
        pool,
        "SELECT p.symbol AS symbol, p.interval AS interval, p.qty AS qty, p.entry_price AS entry_price, "
        "p.cost AS cost, toUnixTimestamp64Milli(p.open_time) AS opened_at, s.close AS last_close, "
        "p.qty * s.close AS market_value, p.qty * s.close - p.cost AS unrealized_pnl "
        "FROM (SELECT * FROM risk_positions FINAL WHERE qty > 0) AS p LEFT JOIN "
        "(SELECT symbol, interval, argMax(close, open_time) AS close FROM risk_state FINAL "
        "GROUP BY symbol, interval) AS s ON s.symbol = p.symbol AND s.interval = p.interval "
        "ORDER BY symbol, interval",
        {},
    )


@router.get("/api/risk/fills")
def fills(
    pool: PoolDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int | None, Query(ge=0, description="next_cursor of the previous page")] = None,
    symbol: Annotated[str | None, Query(max_length=30)] = None,
) -> dict[str, Any]:
    """Fills newest first; ``next_cursor`` (an open time) asks for the page before (None: no more)."""
    where = ["1"]
    params: dict[str, Any] = {"n": limit}
    if cursor is not None:
        where.append("open_time < fromUnixTimestamp64Milli({c:Int64})")
        params["c"] = cursor
    if symbol:
        where.append("symbol = {s:String}")
        params["s"] = symbol.upper()
    rows = _rows(
        pool,
        f"SELECT {_select(_FILL)} FROM risk_fills FINAL WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY open_time DESC, symbol, interval LIMIT {n:UInt32}",
        params,
    )
    return {"fills": rows, "next_cursor": rows[-1]["open_time"] if len(rows) == limit else None}


@router.get("/api/risk/equity")
def equity(
    st: StreamDep,
    pool: PoolDep,
    start: Annotated[int | None, Query(alias="from", ge=0, description="ms, inclusive")] = None,
    end: Annotated[int | None, Query(alias="to", ge=0, description="ms, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> dict[str, Any]:
    """The stream's equity curve: one point per bar its book took (equity, cash, exposure,
    drawdown), oldest first."""
    rows = _rows(
        pool,
        "SELECT toUnixTimestamp64Milli(open_time) AS open_time_ms, equity, cash, exposure, drawdown, "
        "peak_equity FROM risk_state FINAL WHERE symbol = {s:String} AND interval = {i:String} "
        "AND open_time >= fromUnixTimestamp64Milli({a:Int64}) "
        "AND open_time < fromUnixTimestamp64Milli({b:Int64}) "
        "ORDER BY open_time LIMIT {n:UInt32}",
        {"s": st.symbol, "i": st.interval, "a": start or 0, "b": end or 2**62, "n": limit},
    )
    return {"symbol": st.symbol, "interval": st.interval, "points": rows}


@router.get("/api/risk/limits")
def get_limits(pool: PoolDep, settings: SettingsDep) -> dict[str, Any]:
    """The limits in force now, when they took effect (0: the RISK_* defaults), and the changes."""
    now, since, table = _limits_now(pool, settings)
    return {
        "limits": now.model_dump(),
        "effective_from": since,
        "changes": [{"effective_from": t, "limits": lim.model_dump()} for t, lim in table],
    }


@router.put("/api/risk/limits", responses=BAD_BODY)
def put_limits(body: RiskLimits, pool: PoolDep) -> dict[str, Any]:
    """Replace the limits (every field, validated: 422 names a bad one); in force for the bars
    opening from now on, in the stream and in ``ohlcv backtest`` alike."""
    from risk.store import put_limits as store

    at = int(time.time() * 1000)
    with pool.client() as client:
        try:
            store(client, body, at)
        except Exception as exc:
            raise StoreUnavailableError(f"risk write failed: {exc}") from exc
    return {"limits": body.model_dump(), "effective_from": at}


@router.get("/api/inference/activity/summary")
def activity(pool: PoolDep, settings: SettingsDep) -> dict[str, Any]:
    """The trading activity heartbeat (see the module docstring for the colour rule)."""
    (r,) = _rows(
        pool,
        "SELECT toUnixTimestamp64Milli(max(scored_at)) AS last, "
        "countIf(scored_at >= now64(3) - INTERVAL 1 MINUTE) AS d1, "
        "countIf(scored_at >= now64(3) - INTERVAL 5 MINUTE) AS d5 FROM model_inference_log",
        {},
    )
    d5 = int(r["d5"])
    return {
        "last_decision_ts": int(r["last"]) or None,
        "decisions_1m": int(r["d1"]),
        "decisions_5m": d5,
        "status": "idle" if d5 == 0 else "warming" if d5 < 5 else "active",
        "auto_loop_enabled": settings.scoring_enabled,
        "interval": settings.model_poll_interval,
    }
