"""The orchestrator's writes: a segment's repair state (``gap_repairs``) and its attempts
(``backfill_runs``), each transition written in one place, and the reads its attempts need.

Every worker and the poll share one ``Ledger``: one ClickHouse client under one lock, and one
version counter, so the later of two writes of a row always wins under FINAL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from clickhouse_connect.driver.client import Client
from prometheus_client import Counter

from streams.backfill.lifecycle import (
    BackfillError,
    BackfillRun,
    RepairRow,
    SegmentLifecycle,
    backfill_run,
    segment_lifecycles,
)

logger = logging.getLogger(__name__)

RUNS = Counter("ohlcv_backfill_runs_total", "Finished repair attempts by outcome", ["status"])

_REPAIR_COLUMNS = [
    "symbol", "interval", "segment_id", "state", "attempts", "empty_answers", "rest_bars",
    "last_attempt_at", "next_attempt_at", "last_error", "run_id", "updated_at", "version",
]  # fmt: skip
_RUN_COLUMNS = [
    "run_id", "symbol", "interval", "segment_id", "from_open_time", "to_open_time", "expected_bars",
    "loaded_bars", "status", "attempts", "last_error", "started_at", "finished_at", "version",
]  # fmt: skip


class Ledger:
    """``gap_repairs`` and ``backfill_runs`` rows of one orchestrator; times in ms."""

    def __init__(self, client: Client, clock_ms: Callable[[], int]) -> None:
        self.client = client
        self.clock_ms = clock_ms
        self._lock = threading.Lock()  # the client is not thread-safe
        self._version_lock = threading.Lock()
        self._version = 0

    # --- reads -----------------------------------------------------------------------------

    def work(self, symbols: Sequence[str] | None, intervals: Sequence[str] | None) -> list[SegmentLifecycle]:
        """The segments that still need work (``segment_lifecycles(work=True)``)."""
        with self._lock:
            return segment_lifecycles(self.client, symbols=symbols, intervals=intervals, work=True)

    def lifecycles(self, symbols: Sequence[str], intervals: Sequence[str]) -> list[SegmentLifecycle]:
        """Every segment of the streams, whatever its state."""
        with self._lock:
            return segment_lifecycles(self.client, symbols=symbols, intervals=intervals)

    def run(self, run_id: str) -> BackfillRun | None:
        with self._lock:
            return backfill_run(self.client, run_id)

    def stored_times(self, symbol: str, interval: str, lo: int, hi: int) -> set[int]:
        """Open times of the stream's stored closed candles in [lo, hi]."""
        try:
            with self._lock:
                rows = self.client.query(
                    "SELECT DISTINCT toUnixTimestamp64Milli(open_time) FROM ohlcv_candles "
                    "WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
                    "AND open_time >= fromUnixTimestamp64Milli({lo:Int64}) "
                    "AND open_time <= fromUnixTimestamp64Milli({hi:Int64})",
                    parameters={"s": symbol, "i": interval, "lo": lo, "hi": hi},
                ).result_rows
        except Exception as exc:
            raise BackfillError(f"reading stored open times of {symbol}:{interval} failed: {exc}") from exc
        return {int(r[0]) for r in rows}

    # --- the transitions -------------------------------------------------------------------

    def write_repair(self, r: RepairRow) -> None:
        self._insert("gap_repairs", [r.row(self.clock_ms(), self._next_version())], _REPAIR_COLUMNS)

    def write_run(self, run: BackfillRun) -> None:
        self._insert("backfill_runs", [run.row(self._next_version())], _RUN_COLUMNS)

    def finish(self, run: BackfillRun, **changes: Any) -> None:
        """The run ends (``changes``: status, loaded_bars, last_error ...; finished now)."""
        run = replace(run, **changes, finished_at=self.clock_ms())
        self.write_run(run)
        RUNS.labels(run.status).inc()
        logger.info(
            "backfill run finished run=%s key=%s:%s segment=%d status=%s loaded=%d expected=%d attempt=%d",
            run.run_id, run.symbol, run.interval, run.segment_id, run.status, run.loaded_bars,
            run.expected_bars, run.attempts,
        )  # fmt: skip

    def repaired(self, repair: RepairRow, run: BackfillRun | None) -> None:
        """The segment is repaired; its attempt (``run``, else the one its row names) succeeded."""
        self.write_repair(replace(repair, state="repaired", next_attempt_at=None))
        if run is None and repair.state == "repairing" and repair.run_id:
            run = self.run(repair.run_id)
            if run is not None and run.finished_at is not None:
                return
        if run is not None:
            self.finish(run, status="success")

    def failed(
        self,
        repair: RepairRow,
        run: BackfillRun,
        error: str,
        next_at: int,
        produced: int,
        *,
        max_attempts: int,
    ) -> None:
        """The attempt failed: retried at ``next_at`` unless it was the last of ``max_attempts``."""
        give_up = repair.attempts >= max_attempts
        now = self.clock_ms()
        self.write_repair(
            replace(
                repair, state="failed", last_error=error[:2000], next_attempt_at=None if give_up else next_at
            )
        )
        self.finish(run, status="error", last_error=error[:2000], loaded_bars=produced)
        log = logger.error if give_up else logger.warning
        log(
            "backfill attempt failed key=%s:%s segment=%d attempt=%d/%d next_in_s=%s: %s",
            repair.symbol, repair.interval, repair.segment_id, repair.attempts, max_attempts,
            "never" if give_up else f"{max(0, next_at - now) / 1000:.1f}", error,
        )  # fmt: skip

    def empty_answer(self, repair: RepairRow, *, confirmations: int, recheck_s: float) -> None:
        """REST had no candle for what is left of the segment: one more confirmation, and
        ``exchange_gap`` (never retried) at the ``confirmations``-th."""
        empties = repair.empty_answers + 1
        final = empties >= confirmations
        repair = replace(
            repair, state="exchange_gap" if final else "open", empty_answers=empties,
            next_attempt_at=None if final else self.clock_ms() + int(recheck_s * 1000),
        )  # fmt: skip
        self.write_repair(repair)
        logger.info(
            "backfill exchange answered empty key=%s:%s segment=%d empty_answers=%d/%d -> %s",
            repair.symbol, repair.interval, repair.segment_id, empties, confirmations, repair.state,
        )  # fmt: skip

    # --- ClickHouse ------------------------------------------------------------------------

    def _next_version(self) -> int:
        with self._version_lock:
            self._version = max(self._version + 1, time.time_ns() // 1000)
            return self._version

    def _insert(self, table: str, rows: list[list[Any]], columns: list[str]) -> None:
        try:
            with self._lock:
                self.client.insert(table, rows, column_names=columns)
        except Exception as exc:
            raise BackfillError(f"writing {len(rows)} rows to {table} failed: {exc}") from exc
