"""The lifecycle of a gap segment as the API and the orchestrator read it, and the orchestrator's rows.

The topology owns ``gap_segments``; the orchestrator owns ``gap_repairs`` (a ``RepairRow`` per
segment) and ``backfill_runs`` (a ``BackfillRun`` per attempt). ``segment_lifecycles`` joins
the first two into a segment's effective state: ``repaired``/``merged`` from gap_segments win,
then the gap_repairs state, then the gap_segments one (``open``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from ohlcv.errors import OhlcvError

Key = tuple[str, str, int]


class BackfillError(OhlcvError):
    """The orchestrator could not read or write its tables; the message names the table."""


class BackfillStoppedError(BackfillError):
    """The orchestrator is stopping; raised inside a worker's wait to end the attempt early."""


def _ms(v: Any) -> int | None:
    return None if v is None else int(v)


@dataclass(frozen=True, slots=True)
class SegmentLifecycle:
    """One gap segment as the API and the orchestrator see it (times in ms)."""

    symbol: str
    interval: str
    segment_id: int
    segment_end: int
    from_open_time: int
    to_open_time: int
    missing_bars: int
    #: effective: repaired | exchange_gap | failed | repairing | open | merged
    state: str
    #: gap_segments.state (the topology's, or a scan's)
    topology_state: str
    #: gap_repairs.state, '' when the orchestrator never touched the segment
    repair_state: str
    detected_at: int
    repaired_at: int | None
    attempts: int
    empty_answers: int
    rest_bars: int
    last_attempt_at: int | None
    next_attempt_at: int | None
    last_error: str
    run_id: str
    updated_at: int

    @property
    def key(self) -> Key:
        return (self.symbol, self.interval, self.segment_id)


_LIFECYCLE_SQL = """
SELECT g.symbol, g.interval, g.segment_id, g.segment_end,
       toUnixTimestamp64Milli(g.from_open_time), toUnixTimestamp64Milli(g.to_open_time), g.missing_bars,
       multiIf(g.state = 'repaired', 'repaired', g.state = 'merged', 'merged',
               r.state != '', r.state, g.state) AS effective,
       g.state, r.state, toUnixTimestamp64Milli(g.detected_at), toUnixTimestamp64Milli(g.repaired_at),
       r.attempts, r.empty_answers, r.rest_bars, toUnixTimestamp64Milli(r.last_attempt_at),
       toUnixTimestamp64Milli(r.next_attempt_at), r.last_error, r.run_id, toUnixTimestamp64Milli(g.updated_at)
FROM
(
    SELECT * FROM gap_segments FINAL
    WHERE ({any_symbol:UInt8} OR symbol IN {symbols:Array(String)})
      AND ({any_interval:UInt8} OR interval IN {intervals:Array(String)})
) AS g
LEFT JOIN
(
    SELECT * FROM gap_repairs FINAL
    WHERE ({any_symbol:UInt8} OR symbol IN {symbols:Array(String)})
      AND ({any_interval:UInt8} OR interval IN {intervals:Array(String)})
) AS r
ON g.symbol = r.symbol AND g.interval = r.interval AND g.segment_id = r.segment_id
WHERE if({work:UInt8},
         effective IN ('open', 'repairing', 'failed') OR (g.state = 'repaired' AND r.state != 'repaired'),
         {any_state:UInt8} OR effective IN {states:Array(String)})
ORDER BY g.symbol, g.interval, g.segment_id
"""


def segment_lifecycles(
    client: Client,
    *,
    symbols: Sequence[str] | None,
    intervals: Sequence[str] | None,
    states: Sequence[str] | None = None,
    work: bool = False,
) -> list[SegmentLifecycle]:
    """Gap segments of the given streams (None: all) with their effective state (the topology's
    repaired/merged wins, then the orchestrator's state, then the topology's), ascending;
    ``states`` keeps those whose effective state is one of them, ``work`` what still needs work."""
    params = {
        "any_symbol": int(symbols is None),
        "symbols": list(symbols or []),
        "any_interval": int(intervals is None),
        "intervals": list(intervals or []),
        "any_state": int(states is None),
        "states": list(states or []),
        "work": int(work),
    }
    try:
        rows = client.query(_LIFECYCLE_SQL, parameters=params).result_rows
    except Exception as exc:
        raise BackfillError(
            f"reading gap_segments FINAL joined with gap_repairs FINAL failed: {exc}"
        ) from exc
    return [
        SegmentLifecycle(
            symbol=r[0],
            interval=r[1],
            segment_id=int(r[2]),
            segment_end=int(r[3]),
            from_open_time=int(r[4]),
            to_open_time=int(r[5]),
            missing_bars=int(r[6]),
            state=r[7],
            topology_state=r[8],
            repair_state=r[9],
            detected_at=int(r[10]),
            repaired_at=_ms(r[11]),
            attempts=int(r[12]),
            empty_answers=int(r[13]),
            rest_bars=int(r[14]),
            last_attempt_at=_ms(r[15]),
            next_attempt_at=_ms(r[16]),
            last_error=r[17],
            run_id=r[18],
            updated_at=int(r[19]),
        )
        for r in rows
    ]


def segment_lifecycle(
    client: Client, symbol: str, interval: str, *, states: Sequence[str] | None = None
) -> list[SegmentLifecycle]:
    """Every gap segment of the stream with its effective state, ascending by segment id.

    ``states`` keeps only segments whose effective state is one of them.
    """
    return segment_lifecycles(client, symbols=[symbol], intervals=[interval], states=states)


@dataclass(frozen=True, slots=True)
class BackfillRun:
    """One repair attempt of one segment (a row of ``backfill_runs``)."""

    run_id: str
    symbol: str
    interval: str
    segment_id: int
    from_open_time: int
    to_open_time: int
    expected_bars: int
    loaded_bars: int
    status: str
    attempts: int
    last_error: str
    started_at: int
    finished_at: int | None

    def row(self, version: int) -> list[Any]:
        return [
            self.run_id, self.symbol, self.interval, self.segment_id, self.from_open_time,
            self.to_open_time, self.expected_bars, self.loaded_bars, self.status, self.attempts,
            self.last_error, self.started_at, self.finished_at, version,
        ]  # fmt: skip


_RUNS_SELECT = (
    "SELECT run_id, symbol, interval, segment_id, toUnixTimestamp64Milli(from_open_time), "
    "toUnixTimestamp64Milli(to_open_time), expected_bars, loaded_bars, status, attempts, last_error, "
    "toUnixTimestamp64Milli(started_at), toUnixTimestamp64Milli(finished_at) FROM backfill_runs FINAL "
)


def backfill_runs(
    client: Client, symbol: str | None = None, interval: str | None = None
) -> list[BackfillRun]:
    """Runs (under FINAL), oldest first, optionally of one symbol/interval."""
    try:
        rows = client.query(
            _RUNS_SELECT
            + "WHERE ({any_s:UInt8} OR symbol = {s:String}) AND ({any_i:UInt8} OR interval = {i:String}) "
            "ORDER BY started_at, run_id",
            parameters={
                "any_s": int(symbol is None),
                "s": symbol or "",
                "any_i": int(interval is None),
                "i": interval or "",
            },
        ).result_rows
    except Exception as exc:
        raise BackfillError(f"reading backfill_runs FINAL failed: {exc}") from exc
    return [run_of(r) for r in rows]


def backfill_run(client: Client, run_id: str) -> BackfillRun | None:
    """One run by id (under FINAL), None when there is none."""
    try:
        rows = client.query(_RUNS_SELECT + "WHERE run_id = {r:String}", parameters={"r": run_id}).result_rows
    except Exception as exc:
        raise BackfillError(f"reading backfill_runs run {run_id} failed: {exc}") from exc
    return run_of(rows[0]) if rows else None


def run_of(r: Sequence[Any]) -> BackfillRun:
    """A run from a row of ``_RUNS_SELECT``."""
    return BackfillRun(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), int(r[6]), int(r[7]), r[8],
                       int(r[9]), r[10], int(r[11]), _ms(r[12]))  # fmt: skip


@dataclass(frozen=True, slots=True)
class RepairRow:
    """A row of ``gap_repairs``."""

    symbol: str
    interval: str
    segment_id: int
    state: str
    attempts: int
    empty_answers: int
    rest_bars: int
    last_attempt_at: int | None
    next_attempt_at: int | None
    last_error: str
    run_id: str

    @classmethod
    def of(cls, s: SegmentLifecycle) -> RepairRow:
        return cls(s.symbol, s.interval, s.segment_id, s.repair_state or s.state, s.attempts, s.empty_answers,
                   s.rest_bars, s.last_attempt_at, s.next_attempt_at, s.last_error, s.run_id)  # fmt: skip

    def row(self, now: int, version: int) -> list[Any]:
        return [
            self.symbol, self.interval, self.segment_id, self.state, self.attempts, self.empty_answers,
            self.rest_bars, self.last_attempt_at, self.next_attempt_at, self.last_error, self.run_id, now,
            version,
        ]  # fmt: skip
