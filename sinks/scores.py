"""ClickHouse sinks of scores: ``model_inference_log``, one insert per checkpoint. A replayed
record writes the same (stream, open time, score_version) again, which the ReplacingMergeTree
folds.

``ClickHouseScoreSink``: the scoring topology's. ``ClickHouseFeatureScoreSink``: the features
topology's with inline scoring (``topologies.scoring.score_inline``): the feature rows, then
their scores, both written before Quix commits the candle event's offset."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
from clickhouse_connect.driver.client import Client

from schemas.scores import SCORE_COLUMNS, TABLE, ScoredRows
from sinks.arrow import rows_table
from sinks.clickhouse import ClickHouseSink
from sinks.clickhouse_bulk import ARROW_TS, INSERT_SETTINGS
from sinks.features import ClickHouseFeatureSink, FeatureRows

_TYPES: dict[str, Any] = {
    "open_time": ARROW_TS, "feature_emitted_at": ARROW_TS, "scored_at": ARROW_TS,
    "score_version": pa.uint32(), "feature_version": pa.uint32(), "feature_set_version": pa.uint16(),
    "model_id": pa.string(), "model_version": pa.uint32(), "decision": pa.bool_(),
    "window_complete": pa.bool_(), "window_has_repair": pa.bool_(), "bars_missing_in_window": pa.uint16(),
    "event_seq": pa.uint64(),
}  # fmt: skip


def score_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Score rows as one Arrow table of ``SCORE_COLUMNS`` (the row-wise insert's Python
    encoding cost ~10 µs a score; this ~1)."""
    return rows_table(rows, SCORE_COLUMNS, _TYPES)


def write_scores(client: Client, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        client.insert_arrow(TABLE, score_table(rows), settings=INSERT_SETTINGS)


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


class FeatureScoreRows(FeatureRows):
    """A checkpoint's feature rows, then their scores."""

    def __init__(self, features: FeatureRows, scores: list[dict[str, Any]]):
        super().__init__(features.rows, features.blocks)
        self.scores = ScoreRows(scores)
        self.count += self.scores.count

    def write(self, client: Client) -> None:
        super().write(client)
        self.scores.write(client)


class ClickHouseFeatureScoreSink(ClickHouseFeatureSink):
    """The feature rows and the scores of each record (``ScoredRows``)."""

    def rows(self, values: Iterable[Any], now_ms: int) -> FeatureScoreRows:
        rows: list[Any] = []
        scores: list[dict[str, Any]] = []
        for v in values:
            if not isinstance(v, ScoredRows):
                raise TypeError(f"the feature score sink takes ScoredRows, not {type(v).__name__}")
            rows.append(v.rows)
            scores.extend(v.scores)
        return FeatureScoreRows(super().rows(rows, now_ms), scores)
