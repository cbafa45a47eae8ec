"""Feature drift of a stream against its production model's training rows (the pinned
reference), for auto-retrain and the Evidently data drift report.

- **reference**: up to ``REFERENCE_ROWS`` complete-window feature rows of the model's training
  span (``data_from``..``data_to``), taken evenly over it (every k-th row, deterministic);
- **current**: the newest ``window`` (``AUTO_RETRAIN_DRIFT_WINDOW``) complete-window rows;
- per feature the z of ``indicators.drift`` (recent mean in standard errors of the reference);
- the **drift score** over ``AUTO_RETRAIN_DRIFT_FEATURES`` (all features when unset):
  ``max_abs`` = the largest ``|z|``, ``mean_top3`` = the mean of the three largest; drift when
  it exceeds ``DRIFT_Z_THRESHOLD``. A feature whose reference has no spread (z null) counts as
  drifted only through its flag, not in the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from clickhouse_connect.driver.client import Client

from indicators.definitions import FEATURE_NAMES, FEATURE_SET_VERSION
from indicators.drift import DriftReport, drift_between
from registry.store import Model
from schemas.features import NEWS_FEATURE_NAMES

DriftMode = Literal["max_abs", "mean_top3"]
REFERENCE_ROWS = 5000
#: what drift can be measured on: the features, and the news inputs a model may take
KNOWN = (*FEATURE_NAMES, *NEWS_FEATURE_NAMES)
_COLS = ", ".join(KNOWN)


@dataclass(frozen=True, slots=True)
class DriftCheck:
    report: DriftReport
    score: float | None
    mode: DriftMode
    features: tuple[str, ...]
    threshold: float

    @property
    def drifted(self) -> bool:
        return self.score is not None and self.score > self.threshold


def _rows(client: Client, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    res = client.query(sql, parameters=params)
    names = res.column_names
    return [dict(zip(names, r, strict=True)) for r in res.result_rows]


def reference_rows(client: Client, model: Model, n: int = REFERENCE_ROWS) -> list[dict[str, Any]]:
    """Evenly spaced complete-window rows of the model's training span, ascending."""
    params = {
        "s": model.symbol,
        "i": model.interval,
        "v": FEATURE_SET_VERSION,
        "a": model.data_from,
        "b": model.data_to,
    }
    where = (
        "symbol = {s:String} AND interval = {i:String} AND feature_set_version = {v:UInt16} "
        "AND window_complete AND open_time BETWEEN fromUnixTimestamp64Milli({a:Int64}) "
        "AND fromUnixTimestamp64Milli({b:Int64})"
    )
    sql = f"SELECT count() FROM feature_snapshots FINAL WHERE {where}"  # noqa: S608 - constants
    total = int(client.query(sql, parameters=params).result_rows[0][0])
    step = max(1, -(-total // n))
    return _rows(
        client,
        f"SELECT toUnixTimestamp64Milli(open_time) AS open_time, window_complete, {_COLS} FROM ("  # noqa: S608
        f"SELECT *, row_number() OVER (ORDER BY open_time) AS k FROM feature_snapshots FINAL WHERE {where}) "
        f"WHERE (k - 1) % {step} = 0 ORDER BY open_time",
        params,
    )


def current_rows(client: Client, symbol: str, interval: str, window: int) -> list[dict[str, Any]]:
    """The newest ``window`` complete-window rows, ascending."""
    rows = _rows(
        client,
        f"SELECT toUnixTimestamp64Milli(open_time) AS open_time, window_complete, {_COLS} "  # noqa: S608
        "FROM feature_snapshots FINAL WHERE symbol = {s:String} AND interval = {i:String} "
        "AND feature_set_version = {v:UInt16} AND window_complete ORDER BY open_time DESC LIMIT {n:UInt32}",
        {"s": symbol, "i": interval, "v": FEATURE_SET_VERSION, "n": window},
    )
    return rows[::-1]


def drift_score(report: DriftReport, features: Sequence[str], mode: DriftMode) -> float | None:
    zs = sorted((abs(f.z) for f in report.features if f.name in features and f.z is not None), reverse=True)
    if not zs:
        return None
    return zs[0] if mode == "max_abs" else sum(zs[:3]) / len(zs[:3])


def check_drift(
    current: Sequence[dict[str, Any]],
    reference: Sequence[dict[str, Any]],
    *,
    features: Sequence[str] | None,
    mode: DriftMode,
    threshold: float,
) -> DriftCheck:
    names = tuple(features or FEATURE_NAMES)
    unknown = sorted(set(names) - set(KNOWN))
    if unknown:
        raise ValueError(f"unknown drift features {unknown}; known: {', '.join(KNOWN)}")
    report = drift_between(current, reference, threshold, names)
    return DriftCheck(report, drift_score(report, names, mode), mode, names, threshold)
