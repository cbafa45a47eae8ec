"""ClickHouse sink of the risk topology: ``risk_decisions``, ``risk_fills``, ``risk_positions``
(after each fill) and ``risk_state`` (each bar's mark with the whole book), one insert per table
per checkpoint. Every row is keyed by its bar, so a replayed score writes the same rows again."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from sinks.clickhouse import ClickHouseSink
from sinks.clickhouse_bulk import INSERT_SETTINGS

DECISION_COLUMNS = ("symbol", "interval", "open_time", "outcome", "reason", "probability", "model_id",
                    "position_qty", "limits_from", "at")  # fmt: skip
FILL_COLUMNS = ("symbol", "interval", "open_time", "decided_at", "side", "reason", "qty", "price", "fee",
                "cash_after", "realized_pnl", "at")  # fmt: skip
POSITION_COLUMNS = ("symbol", "interval", "open_time", "qty", "entry_price", "cost", "at")
STATE_COLUMNS = ("symbol", "interval", "open_time", "close", "cash", "position_qty", "entry_price",
                 "exposure", "equity", "peak_equity", "drawdown", "utilization", "day_start_equity",
                 "cooldown_left", "pending", "account_exposure", "book", "at")  # fmt: skip


class RiskRows:
    def __init__(self, records: list[dict[str, Any]], now_ms: int):
        self.tables: dict[str, tuple[tuple[str, ...], list[list[Any]]]] = {
            "risk_decisions": (DECISION_COLUMNS, []), "risk_fills": (FILL_COLUMNS, []),
            "risk_positions": (POSITION_COLUMNS, []), "risk_state": (STATE_COLUMNS, []),
        }  # fmt: skip
        for rec in records:
            book = rec["book"]
            for e in rec["events"]:
                row = {**e, "at": now_ms}
                if e["type"] == "decision":
                    self._add("risk_decisions", row)
                elif e["type"] == "fill":
                    self._add("risk_fills", row)
                    buy = e["side"] == "buy"
                    pos = {"qty": book["qty"] if buy else 0.0, "entry_price": e["price"] if buy else None,
                           "cost": book["cost"] if buy else 0.0}  # fmt: skip
                    self._add("risk_positions", {**row, **pos})
                else:
                    self._add(
                        "risk_state",
                        {**row, "pending": e["pending"] or "", "book": orjson.dumps(book).decode()},
                    )
        self.count = len(records)

    def _add(self, table: str, row: dict[str, Any]) -> None:
        cols, rows = self.tables[table]
        rows.append([row[c] for c in cols])

    def write(self, client: Client) -> None:
        for table, (cols, rows) in self.tables.items():
            if rows:
                client.insert(table, rows, column_names=list(cols), settings=INSERT_SETTINGS)


class ClickHouseRiskSink(ClickHouseSink):
    """A record's value: ``{"events": [...], "book": {...}}`` (the book after its bar)."""

    def rows(self, values: Iterable[Any], now_ms: int) -> RiskRows:
        return RiskRows([v for v in values if v], now_ms)
