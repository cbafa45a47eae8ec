"""``rebuild_features`` over the real XRP/USDT dump bulk-loaded into chDB (no events, so no
feature rows): the rows it writes equal the independent batch reference (``indicators.batch``)
across chunk boundaries and both real outages; a second run writes nothing; a candle revised in
ClickHouse is rebuilt over a sub-range exactly, from the start of its run."""

from __future__ import annotations

import dataclasses
from itertools import pairwise

from clickhouse_connect.driver.client import Client

from indicators.batch import features
from sinks.clickhouse_bulk import insert_block, insert_candles
from streams.importers import CandleBlock
from tests.indicators.helpers import frame, mismatches
from tests.topologies.feature_helpers import assert_exact, stored_candles, stored_rows
from tests.topologies.helpers import xrp_candles
from topologies.feature_rebuild import rebuild_features

MIN = 60_000


def _runs_starts(times: list[int]) -> list[int]:
    return [times[0]] + [b for a, b in pairwise(times) if b - a != MIN]


def test_rebuild_of_bulk_loaded_history_equals_the_batch_reference_and_a_second_run_writes_nothing(
    ch: Client,
) -> None:
    real = xrp_candles()
    insert_candles(ch, real)
    seen: list[tuple[int, int]] = []
    r = rebuild_features(ch, "XRPUSDT", "1m", chunk_bars=7_000, progress=lambda d, t: seen.append((d, t)))
    n = len(real)
    assert (r.in_range, r.derived, r.written, r.missing, r.newer_may_be_stale) == (n, n, n, n, False)
    assert (r.from_open_time, r.to_open_time, r.derived_from) == (real[0].open_time, real[-1].open_time,
                                                                 real[0].open_time)  # fmt: skip
    assert seen[-1] == (n, n) and len(seen) == -(-n // 7_000)
    assert all(a[0] < b[0] for a, b in pairwise(seen))
    rows = assert_exact(ch, "1m")
    assert {(x["feature_version"], x["reason"]) for x in rows} == {(1, "rebuild")}
    seqs = ch.query("SELECT DISTINCT event_seq FROM feature_snapshots").result_rows
    assert seqs == [(0,)]
    again = rebuild_features(ch, "XRPUSDT", "1m")
    assert (again.in_range, again.written) == (n, 0)
    # nothing stored in a range: nothing written, said so
    empty = rebuild_features(ch, "XRPUSDT", "1m", start_ms=0, end_ms=real[0].open_time)
    assert (empty.in_range, empty.written, empty.from_open_time) == (0, 0, None)


def test_a_candle_revised_in_clickhouse_is_rebuilt_over_a_sub_range_from_the_start_of_its_run(
    ch: Client,
) -> None:
    real = xrp_candles()
    insert_candles(ch, real)
    rebuild_features(ch, "XRPUSDT", "1m")
    third_run = _runs_starts([c.open_time for c in real])[2]  # after the second real outage
    i = next(k for k, c in enumerate(real) if c.open_time == third_run) + 400
    old = real[i]
    revised = dataclasses.replace(
        old, close=round(old.close * 1.01, 5), high=max(old.high, round(old.close * 1.01, 5))
    )
    insert_block(ch, CandleBlock.from_candles("XRPUSDT", "1m", [revised]), revision=1, source="rest",
                 skip_existing=False)  # fmt: skip
    t = revised.open_time
    r = rebuild_features(ch, "XRPUSDT", "1m", start_ms=t - 10 * MIN, end_ms=t + 100 * MIN, chunk_bars=150)
    # derived from the run's first bar (the recursive features seed there); written: the revised
    # bar and every later bar of the range (its EMAs carry the change); the 10 before: unchanged
    assert (r.derived_from, r.in_range, r.written, r.missing) == (third_run, 110, 100, 0)
    assert r.newer_may_be_stale  # the run goes on after end_ms
    candles = stored_candles(ch, "1m")
    assert next(c for c in candles if c.open_time == t).close == revised.close
    batch = features(frame(candles, {t}), MIN)
    rows = stored_rows(ch, "1m")
    in_range = [k for k, x in enumerate(rows) if t - 10 * MIN <= x["open_time"] < t + 100 * MIN]
    assert not mismatches([rows[k] for k in in_range], batch.iloc[in_range].reset_index(drop=True))
    assert [rows[k]["feature_version"] for k in in_range] == [1] * 10 + [2] * 100
    assert rows[in_range[10]]["bar_repaired"] and rows[in_range[10]]["window_has_repair"]
    after = [k for k, x in enumerate(rows) if x["open_time"] >= t + 100 * MIN][:50]
    assert mismatches([rows[k] for k in after], batch.iloc[after].reset_index(drop=True)), "rows after --to"
    # the whole stream again: now every row is exact, and only the stale ones were written
    full = rebuild_features(ch, "XRPUSDT", "1m")
    assert 0 < full.written <= len(real) - (in_range[-1] + 1)
    assert not full.newer_may_be_stale
    assert_exact(ch, "1m", repaired={t})
