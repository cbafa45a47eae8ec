"""The features sink writes a page's columns (RowBlock) and single rows in one insert, exactly."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.client import Client

from schemas.features import FEATURE_COLUMNS, RowBlock
from sinks.features import block_table, feature_table, write_features
from tests.topologies.helpers import DictState, xrp_candles
from topologies.feature_logic import FeatureStream
from topologies.news_features import NewsBook


def _page_and_singles() -> tuple[RowBlock, list[dict[str, object]]]:
    cs = xrp_candles()[:700]
    fs, state = FeatureStream(), DictState()
    block = fs.apply_many(cs[:600], ["new"] * 600, state)
    assert isinstance(block, RowBlock)
    singles = []
    for c in cs[600:]:
        out = fs.apply(c, "new", state)
        assert isinstance(out, list)
        singles += out
    news = NewsBook()  # stories over the span: some rows average some, some are stalled
    t0 = cs[0].open_time
    news.add_many(
        (f"a{k}", t0 + k * 1_500_000, ["XRPUSDT"] if k % 2 else [], k / 20 - 0.4) for k in range(16)
    )
    news.annotate(block)
    news.annotate(singles)
    assert {r["news_stalled"] for r in [*block, *singles]} == {True, False}
    for i, r in enumerate([*block, *singles]):
        r["event_seq"], r["emitted_at"] = 7 if i < 600 else i, 1_700_000_000_000
    block.columns["event_seq"], block.columns["emitted_at"] = [7], [1_700_000_000_000]
    return block, singles


def test_a_blocks_columns_make_the_table_its_rows_make() -> None:
    block, _ = _page_and_singles()
    assert block_table(block).to_pylist() == feature_table(list(block)).to_pylist()


@pytest.mark.clickhouse
def test_blocks_and_rows_go_in_one_insert_and_read_back_as_written(ch: Client) -> None:
    block, singles = _page_and_singles()
    write_features(ch, singles, [block])
    cols = ", ".join(f"`{c}`" for c in FEATURE_COLUMNS if c not in ("open_time", "emitted_at"))
    got = ch.query(f"SELECT {cols} FROM feature_snapshots FINAL ORDER BY open_time").result_rows
    want = [
        tuple(r[c] for c in FEATURE_COLUMNS if c not in ("open_time", "emitted_at"))
        for r in [*block, *singles]
    ]
    assert [tuple(g) for g in got] == [tuple(list(x) if isinstance(x, list) else x for x in w) for w in want]
