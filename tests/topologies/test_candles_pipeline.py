"""Tier c: the real topology on the embedded broker, writing to real chDB."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from tests.topologies.helpers import xrp_candles
from tests.topologies.pipeline import produce, run_topology, unique_topics

MIN = 60_000


@pytest.mark.broker
def test_xrp_dump_through_the_pipeline(broker: str, topic_prefix: str, ch: Client, ch_url: str, ch_db: str,
                                       tmp_path: Path) -> None:  # fmt: skip
    topics = unique_topics(broker, topic_prefix)
    # both real outages, with a day of real market before the first and after the second
    candles = [c for c in xrp_candles() if 1618790400000 <= c.open_time < 1619402400000]
    t0 = time.monotonic()
    produce(broker, topics["raw"], candles)
    run_topology(broker, topics, ch_url, ch_db, tmp_path / "state", resample=("5m",))
    elapsed = time.monotonic() - t0
    print(f"pipeline: {len(candles)} klines in {elapsed:.1f}s")
    q = ch.query
    assert q("SELECT count() FROM ohlcv_candles FINAL WHERE interval = '1m'").result_rows[0][0] == len(
        candles
    )
    segs = q("SELECT segment_id, missing_bars, state FROM gap_segments FINAL WHERE interval = '1m' "
             "ORDER BY segment_id").result_rows  # fmt: skip
    assert segs == [(1618883940000 + MIN, 150, "open"), (1619323260000 + MIN, 283, "open")]
    seqs = q(
        "SELECT min(seq), max(seq), count(), uniqExact(seq) FROM ohlcv_events WHERE interval = '1m'"
    ).result_rows[0]
    assert seqs[0] == 1 and seqs[1] == seqs[2] == seqs[3]
    # resampled candles equal a straightforward batch aggregation of the stored 1m candles
    diff = q("""
        WITH m AS (SELECT * FROM ohlcv_candles FINAL WHERE interval = '1m'),
        agg AS (
          SELECT toStartOfInterval(open_time, INTERVAL 5 MINUTE) AS t, argMin(open, open_time) AS o,
                 max(high) AS h, min(low) AS l, argMax(close, open_time) AS c, sum(volume) AS v, count() AS n
          FROM m GROUP BY t)
        SELECT count(), countIf(abs(r.open - agg.o) > 0 OR abs(r.high - agg.h) > 0 OR abs(r.low - agg.l) > 0
               OR abs(r.close - agg.c) > 0 OR abs(r.volume - agg.v) > 1e-9 * agg.v OR r.bars != agg.n)
        FROM (SELECT * FROM ohlcv_candles FINAL WHERE interval = '5m') AS r
        FULL OUTER JOIN agg ON r.open_time = agg.t
        WHERE agg.t < (SELECT max(t) FROM agg)  -- the newest bucket is still open
    """).result_rows[0]  # fmt: skip
    buckets = len({c.open_time // 300_000 for c in candles})
    assert diff == (buckets - 1, 0)
