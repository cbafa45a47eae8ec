"""ClickHouse sink of the features topology: ``feature_snapshots``, idempotently.

A row derived again carries a higher ``feature_version``, and the table is a ReplacingMergeTree
on it, so a replay after a crash (the same rows, the same versions) leaves one row per open
time under FINAL. One Arrow insert per checkpoint for every partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
from clickhouse_connect.driver.client import Client
from prometheus_client import Gauge

from schemas.features import FEATURE_COLUMNS, TABLE, RowBlock
from sinks.arrow import DICTIONARY, rows_table
from sinks.clickhouse import ClickHouseSink
from sinks.clickhouse_bulk import ARROW_TS, INSERT_SETTINGS

_TYPES: dict[str, Any] = {
    "open_time": ARROW_TS, "emitted_at": ARROW_TS, "window_complete": pa.bool_(),
    "window_has_repair": pa.bool_(), "bar_repaired": pa.bool_(), "bars_missing_in_window": pa.uint16(),
    "feature_version": pa.uint32(), "feature_set_version": pa.uint16(), "event_seq": pa.uint64(),
    "carry": pa.list_(pa.float64()), "news_count": pa.uint32(), "news_stalled": pa.bool_(),
}  # fmt: skip

LAST_SUCCESS = Gauge(
    "feature_scheduler_last_success_timestamp",
    "Unix time of the features topology's last successful write of feature rows",
)


def feature_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Feature rows (``topologies.feature_logic`` dicts with ``event_seq`` and ``emitted_at``;
    a rebuild's rows have ``event_seq`` 0) as one Arrow table of ``FEATURE_COLUMNS``."""
    return rows_table(rows, FEATURE_COLUMNS, _TYPES)


def block_table(block: RowBlock) -> pa.Table:
    """A ``RowBlock``'s rows as one Arrow table of ``FEATURE_COLUMNS``, from its columns (a
    one-value column holds the value of every row)."""
    n = len(block)
    cols = block.columns
    arrays = []
    for col in FEATURE_COLUMNS:
        values = cols[col]
        if col in DICTIONARY:
            if len(values) == 1:
                arrays.append(pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                                             pa.array(values, pa.string())))  # fmt: skip
            else:
                arrays.append(pa.array(values, pa.string()).dictionary_encode())
        else:
            arrays.append(
                pa.array(list(values) * n if len(values) == 1 else values, _TYPES.get(col, pa.float64()))
            )
    return pa.Table.from_arrays(arrays, names=list(FEATURE_COLUMNS))


def write_features(client: Client, rows: Sequence[dict[str, Any]], blocks: Sequence[RowBlock] = ()) -> None:
    """Insert ``rows`` and every row of ``blocks`` in one Arrow insert."""
    tables = [feature_table(rows)] if rows else []
    tables += [block_table(b) for b in blocks if b]
    if not tables:
        return
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables).unify_dictionaries()
    client.insert_arrow(TABLE, table, settings=INSERT_SETTINGS)


class FeatureRows:
    def __init__(self, rows: list[dict[str, Any]], blocks: list[RowBlock] | None = None):
        self.rows = rows
        self.blocks = blocks or []
        self.count = len(rows) + sum(map(len, self.blocks))

    def write(self, client: Client) -> None:
        write_features(client, self.rows, self.blocks)


class ClickHouseFeatureSink(ClickHouseSink):
    """Writes the features topology's rows (a record's value: the list of its rows)."""

    def rows(self, values: Iterable[Any], now_ms: int) -> FeatureRows:
        out: list[dict[str, Any]] = []
        blocks: list[RowBlock] = []
        for value in values:
            if isinstance(value, RowBlock):
                blocks.append(value)
            elif isinstance(value, list):
                out.extend(value)
            elif value:
                out.append(value)
        return FeatureRows(out, blocks)

    def written(self, rows: Any) -> None:
        if rows.count:
            LAST_SUCCESS.set(self.last_success or 0)
