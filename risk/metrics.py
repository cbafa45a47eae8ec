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


class BookGauges(threading.Thread):
    def __init__(self, every_s: float):
        super().__init__(name="risk-gauges", daemon=True)
        self.every_s = every_s
        self.latest: dict[str, dict[str, Any]] = {}
        self.stop_event = threading.Event()

    def update(self, key: str, book: dict[str, Any]) -> None:
        self.latest[key] = book["mark"]

    def sample(self) -> None:
        for key, m in list(self.latest.items()):
            sym, _, iv = key.partition(":")
            EQUITY.labels(sym, iv).set(m["equity"])
            DRAWDOWN.labels(sym, iv).set(m["drawdown"])
            UTILIZATION.labels(sym, iv).set(m["utilization"])
            EXPOSURE.labels(sym, iv).set(m["exposure"])

    def run(self) -> None:
        while not self.stop_event.wait(self.every_s):
            self.sample()
