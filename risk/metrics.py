"""The books' gauges, sampled every ``RISK_METRICS_INTERVAL`` seconds from the newest book of
each stream the risk topology holds (the original's in-memory sampling)."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import Gauge

EQUITY = Gauge("risk_equity", "Equity of the stream's simulated book", ["symbol", "interval"])
DRAWDOWN = Gauge("risk_drawdown", "Drawdown from peak equity (fraction)", ["symbol", "interval"])
UTILIZATION = Gauge("risk_utilization", "Exposure / max position notional", ["symbol", "interval"])
EXPOSURE = Gauge("risk_exposure", "Position value at the last close", ["symbol", "interval"])
ACCOUNT = Gauge("risk_account_exposure", "All books' committed exposure (max_total_exposure's measure)")


class BookGauges(threading.Thread):
    def __init__(self, every_s: float):
        super().__init__(name="risk-gauges", daemon=True)
        self.every_s = every_s
        self.latest: dict[str, dict[str, Any]] = {}
        self.account: float | None = None
        self.stop_event = threading.Event()

    def update(self, key: str, book: dict[str, Any]) -> None:
        self.latest[key] = book["mark"]
        self.account = book["mark"]["account_exposure"]  # the newest decision's view of the account

    def sample(self) -> None:
        for key, m in list(self.latest.items()):
            sym, _, iv = key.partition(":")
            EQUITY.labels(sym, iv).set(m["equity"])
            DRAWDOWN.labels(sym, iv).set(m["drawdown"])
            UTILIZATION.labels(sym, iv).set(m["utilization"])
            EXPOSURE.labels(sym, iv).set(m["exposure"])
        if self.account is not None:
            ACCOUNT.set(self.account)

    def run(self) -> None:
        while not self.stop_event.wait(self.every_s):
            self.sample()
