"""Reads and writes of the risk tables: the limits in force (``risk_limits``), a stream's stored
book (the re-seed), and the defaults from the settings (``RISK_*``)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from schemas.risk import RiskLimits
from topologies.risk_logic import limits_at

log = logging.getLogger(__name__)


def default_limits(settings: Any) -> RiskLimits:
    return RiskLimits(
        max_position_notional=settings.risk_max_position_notional,
        max_total_exposure=settings.risk_max_total_exposure,
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
    """The limits in force for a bar, from ``risk_limits``: read on the first call, then again
    every ``poll_s`` on a timer thread (never inside the step; 0: read once)."""

    def __init__(self, client: Client, default: RiskLimits, poll_s: float = 5.0):
        self.client, self.default, self.poll_s = client, default, poll_s
        self._table: list[tuple[int, RiskLimits]] = []
        self._started = False

    def __call__(self, open_time: int) -> tuple[RiskLimits, int]:
        if not self._started:
            self._table, self._started = limit_table(self.client), True
            if self.poll_s > 0:
                threading.Thread(target=self._refresh, name="risk-limits", daemon=True).start()
        return limits_at(self._table, open_time, self.default)

    def _refresh(self) -> None:
        while True:  # a daemon thread: it ends with the process
            time.sleep(self.poll_s)
            try:
                self._table = limit_table(self.client)  # one reference swap: the step reads either
            except Exception:  # a failed read keeps the limits in force; the next poll retries
                log.warning("risk_limits read failed; keeping the limits in force", exc_info=True)


def stored_book(client: Client, symbol: str, interval: str) -> dict[str, Any] | None:
    """The book after the stream's newest stored bar, or None."""
    rows = client.query(
        "SELECT book FROM risk_state FINAL WHERE symbol = {s:String} AND interval = {i:String} "
        "ORDER BY open_time DESC LIMIT 1",
        parameters={"s": symbol, "i": interval},
    ).result_rows
    return dict(orjson.loads(rows[0][0])) if rows else None


def stored_books(client: Client) -> dict[str, dict[str, Any]]:
    """Every stream's book after its newest stored bar, by ``SYMBOL:interval`` (the account's seed)."""
    rows = client.query(
        "SELECT symbol, interval, book FROM risk_state FINAL "
        "ORDER BY symbol, interval, open_time DESC LIMIT 1 BY symbol, interval"
    ).result_rows
    return {f"{s}:{i}": dict(orjson.loads(b)) for s, i, b in rows}
