"""Reads and writes of the risk tables: the limits in force (``risk_limits``), a stream's stored
book (the re-seed), and the defaults from the settings (``RISK_*``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from schemas.risk import RiskLimits
from topologies.risk_logic import limits_at


def default_limits(settings: Any) -> RiskLimits:
    return RiskLimits(
        max_position_notional=settings.risk_max_position_notional,
        max_daily_loss=settings.risk_max_daily_loss,
        max_drawdown=settings.risk_max_drawdown,
        stop_loss_pct=settings.risk_stop_loss_pct,
        cooldown_bars=settings.risk_cooldown_bars,
        fee_bps=settings.risk_fee_bps,
        slippage_bps=settings.risk_slippage_bps,
    )


def limit_table(client: Client) -> list[tuple[int, RiskLimits]]:
    """Every limits change as (effective_from ms, limits), ascending."""
    rows = client.query(
        "SELECT toUnixTimestamp64Milli(effective_from), limits FROM risk_limits FINAL ORDER BY effective_from"
    ).result_rows
    return [(int(t), RiskLimits.model_validate_json(v)) for t, v in rows]


def put_limits(client: Client, limits: RiskLimits, effective_from: int) -> None:
    now = int(time.time() * 1000)
    client.insert("risk_limits", [[effective_from, limits.model_dump_json(), now]],
                  column_names=["effective_from", "limits", "at"])  # fmt: skip


class LimitsSource:
    """The limits in force for a bar, from ``risk_limits`` read again every ``poll_s``."""

    def __init__(self, client: Client, default: RiskLimits, poll_s: float = 5.0):
        self.client, self.default, self.poll_s = client, default, poll_s
        self._table: list[tuple[int, RiskLimits]] = []
        self._read_at = -1e18
        self._lock = threading.Lock()

    def __call__(self, open_time: int) -> tuple[RiskLimits, int]:
        now = time.monotonic()
        if now - self._read_at >= self.poll_s:
            with self._lock:
                self._table, self._read_at = limit_table(self.client), now
        return limits_at(self._table, open_time, self.default)


def stored_book(client: Client, symbol: str, interval: str) -> dict[str, Any] | None:
    """The book after the stream's newest stored bar, or None."""
    rows = client.query(
        "SELECT book FROM risk_state FINAL WHERE symbol = {s:String} AND interval = {i:String} "
        "ORDER BY open_time DESC LIMIT 1",
        parameters={"s": symbol, "i": interval},
    ).result_rows
    return dict(orjson.loads(rows[0][0])) if rows else None
