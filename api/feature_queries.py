"""The API's reads of ``feature_snapshots`` (rules as ``api.queries``: bound parameters, ms
times, ``FINAL`` for exact rows: a row derived again replaces the older version only at a merge).

The selected columns are ``schemas.features.FEATURE_COLUMNS`` (a constant, the table's contract),
so a row comes back as a ``schemas.features.FeatureRow``-shaped dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from api.queries import ClientPool, Stream, query_rows
from schemas.features import FEATURE_COLUMNS, TABLE

_TIMES = frozenset({"open_time", "emitted_at"})
_INTS = frozenset({"bars_missing_in_window", "feature_version", "feature_set_version", "event_seq"})
_BOOLS = frozenset({"window_complete", "window_has_repair", "bar_repaired"})
_SELECT = ", ".join(
    f"toUnixTimestamp64Milli({c}) AS {c}_ms" if c in _TIMES else f"`{c}`" for c in FEATURE_COLUMNS
)
_FROM = f"SELECT {_SELECT} FROM {TABLE} FINAL WHERE symbol = {{s:String}} AND interval = {{i:String}}"  # noqa: S608

SQL_FEATURES_LATEST = f"{_FROM} ORDER BY open_time DESC LIMIT {{n:UInt32}}"
SQL_FEATURES_BEFORE = (
    f"{_FROM} AND open_time < fromUnixTimestamp64Milli({{b:Int64}}) "
    "ORDER BY open_time DESC LIMIT {n:UInt32}"
)
SQL_FEATURES_AFTER = (
    f"{_FROM} AND open_time > fromUnixTimestamp64Milli({{a:Int64}}) ORDER BY open_time ASC LIMIT {{n:UInt32}}"
)
SQL_FEATURES_COMPLETE = f"{_FROM} AND window_complete ORDER BY open_time DESC LIMIT {{n:UInt32}}"
SQL_FEATURES_AT = f"{_FROM} AND open_time = fromUnixTimestamp64Milli({{t:Int64}}) LIMIT 1"


def feature_dict(r: Sequence[Any]) -> dict[str, Any]:
    """A ``FeatureRow``-shaped dict from a row of the SELECTs above."""
    out: dict[str, Any] = {}
    for col, v in zip(FEATURE_COLUMNS, r, strict=True):
        if col in _TIMES or col in _INTS:
            out[col] = int(v)
        elif col in _BOOLS:
            out[col] = bool(v)
        elif col == "carry":
            out[col] = list(v)
        else:
            out[col] = v
    return out


class FeatureQueries:
    """Feature-row reads of one API process."""

    def __init__(self, pool: ClientPool):
        self.pool = pool

    def _rows(self, what: str, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [feature_dict(r) for r in query_rows(self.pool, what, sql, params)]

    def latest(self, st: Stream) -> dict[str, Any] | None:
        rows = self._rows("features.latest", SQL_FEATURES_LATEST, st.params(n=1))
        return rows[0] if rows else None

    def at(self, st: Stream, open_time: int) -> dict[str, Any] | None:
        rows = self._rows("features.at", SQL_FEATURES_AT, st.params(t=open_time))
        return rows[0] if rows else None

    def history(
        self, st: Stream, limit: int, before: int | None, after: int | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Feature rows of one page, ascending, and whether more exist beyond it."""
        if after is not None:
            rows = self._rows("features.history", SQL_FEATURES_AFTER, st.params(a=after, n=limit + 1))
            return rows[:limit], len(rows) > limit
        if before is not None:
            rows = self._rows("features.history", SQL_FEATURES_BEFORE, st.params(b=before, n=limit + 1))
        else:
            rows = self._rows("features.history", SQL_FEATURES_LATEST, st.params(n=limit + 1))
        return rows[:limit][::-1], len(rows) > limit

    def newest_complete(self, st: Stream, n: int) -> list[dict[str, Any]]:
        """The newest ``n`` rows whose window is complete, ascending."""
        return self._rows("features.drift", SQL_FEATURES_COMPLETE, st.params(n=n))[::-1]
