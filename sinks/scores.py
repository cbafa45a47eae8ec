"""ClickHouse sink of the scoring topology: ``model_inference_log``, one insert per checkpoint.
A replayed record writes the same (stream, open time, score_version) again, which the
ReplacingMergeTree folds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from schemas.scores import SCORE_COLUMNS, TABLE
from sinks.clickhouse import ClickHouseSink
from sinks.clickhouse_bulk import INSERT_SETTINGS


def write_scores(client: Client, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        client.insert(TABLE, [[r[c] for c in SCORE_COLUMNS] for r in rows], column_names=list(SCORE_COLUMNS),
                      settings=INSERT_SETTINGS)  # fmt: skip


class ScoreRows:
    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows
        self.count = len(rows)

    def write(self, client: Client) -> None:
        write_scores(client, self.rows)


class ClickHouseScoreSink(ClickHouseSink):
    def rows(self, values: Iterable[Any], now_ms: int) -> ScoreRows:
        out: list[dict[str, Any]] = []
        for v in values:
            out.extend(v if isinstance(v, list) else [v])
        return ScoreRows(out)
