"""The ``drift_reports`` table: one row per Evidently report, its key numbers and its file."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from clickhouse_connect.driver.client import Client

from ohlcv.errors import OhlcvError
from registry.store import ms_select, of_stream
from reports.evidently_reports import ReportRecord

COLUMNS = tuple(ReportRecord.__dataclass_fields__)
_TIMES = ("at", "reference_from", "reference_to", "current_from", "current_to")


class UnknownReportError(OhlcvError):
    """No report with that id."""


def store(client: Client, rec: ReportRecord) -> None:
    d = asdict(rec)
    d["metrics"] = json.dumps(d["metrics"])
    client.insert("drift_reports", [[d[c] for c in COLUMNS]], column_names=list(COLUMNS))


def _select() -> str:
    return ms_select(COLUMNS, _TIMES)


def _record(row: tuple[Any, ...]) -> ReportRecord:
    d = dict(zip(COLUMNS, row, strict=True))
    d["metrics"] = json.loads(d["metrics"])
    return ReportRecord(**d)


def reports(
    client: Client,
    symbol: str | None = None,
    interval: str | None = None,
    kind: str | None = None,
    limit: int = 50,
) -> list[ReportRecord]:
    cond, params = of_stream(symbol, interval)
    params["n"] = limit
    if kind is not None:
        cond += f"{' AND' if cond else ' WHERE'} kind = {{k:String}}"
        params["k"] = kind
    rows = client.query(
        f"SELECT {_select()} FROM drift_reports{cond} ORDER BY at DESC LIMIT {{n:UInt32}}",  # noqa: S608
        parameters=params,
    ).result_rows
    return [_record(tuple(r)) for r in rows]


def report(client: Client, report_id: str) -> ReportRecord:
    rows = client.query(
        f"SELECT {_select()} FROM drift_reports WHERE report_id = {{r:String}} LIMIT 1",  # noqa: S608
        parameters={"r": report_id},
    ).result_rows
    if not rows:
        raise UnknownReportError(f"unknown report {report_id!r}")
    return _record(tuple(rows[0]))
