"""The candle sink under a ClickHouse outage: backpressure, then catch-up, nothing lost."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

import sinks.clickhouse as sink_module
from tests.topologies.helpers import vision_candles
from tests.topologies.pipeline import produce, run_topology, unique_topics


@pytest.mark.broker
def test_clickhouse_outage_backpressures_then_catches_up(
    broker: str, topic_prefix: str, ch: Client, ch_url: str, ch_db: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    topics = unique_topics(broker, topic_prefix)
    candles = vision_candles("AVAXUSDT")[:3000]
    produce(broker, topics["raw"], candles)

    # ClickHouse "goes away" for the first 3 s of writes: every insert fails as a dead server would
    real_write = sink_module.Rows.write
    outage_until: list[float] = []
    failures: list[int] = []

    def flaky_write(self: Any, client: Client) -> None:
        if not outage_until:
            outage_until.append(time.monotonic() + 3.0)
        if time.monotonic() < outage_until[0]:
            failures.append(1)
            raise ConnectionError("clickhouse unavailable (injected)")
        real_write(self, client)

    monkeypatch.setattr(sink_module.Rows, "write", flaky_write)
    monkeypatch.setattr(sink_module.ClickHouseCandleSink, "__init__", _fast_retry_init)
    run_topology(broker, topics, ch_url, ch_db, tmp_path / "state", resample=(), idle_timeout_s=8)

    assert len(failures) >= 2, "the outage never hit a write"
    q = ch.query
    assert q("SELECT count() FROM ohlcv_candles FINAL").result_rows[0][0] == 3000
    dup = q(
        "SELECT count() FROM (SELECT open_time FROM ohlcv_candles FINAL "
        "GROUP BY open_time HAVING count() > 1)"
    )
    assert dup.result_rows[0][0] == 0
    stored = {
        r[0]: r[1]
        for r in q("SELECT toUnixTimestamp64Milli(open_time), close FROM ohlcv_candles FINAL").result_rows
    }
    assert all(stored[c.open_time] == c.close for c in candles)
    seq = q("SELECT max(seq), uniqExact(seq) FROM ohlcv_events").result_rows[0]
    assert seq[0] == seq[1] == 2 * 3000  # partial_close + append per candle, no hole after the replay
    assert q("SELECT count() FROM gap_segments").result_rows[0][0] == 0


_orig_init = sink_module.ClickHouseCandleSink.__init__


def _fast_retry_init(self: Any, url: str, database: str | None = None, *, retry_after_s: float = 2.0) -> None:
    _orig_init(self, url, database, retry_after_s=0.5)
