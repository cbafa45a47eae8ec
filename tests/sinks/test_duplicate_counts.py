"""Every reader that counts candles counts a candle once while its duplicates sit unmerged.

At-least-once delivery stores the same candle more than once; ReplacingMergeTree folds the
copies only when it merges parts, at a time of its choosing. Here the duplicates are inserted
as two parts with merges stopped, so a plain ``count()`` over them would be too high.
"""

from __future__ import annotations

import io
import threading
from contextlib import redirect_stdout

import pytest
from clickhouse_connect.driver.client import Client

from api.queries import CandleQueries, ClientPool, Stream
from ohlcv import demo
from ohlcv.infra.clickhouse import make_client
from sinks.clickhouse_bulk import insert_block
from streams.continuity import scan
from streams.importers.common import CandleBlock
from tests.topologies.helpers import vision_candles
from topologies.seed import ClickHouseLookup

SYMBOL = "LINKUSDT"


@pytest.fixture
def duplicated(ch: Client) -> tuple[int, int, int]:
    """500 real candles, 300 of them stored twice in a second part; (first, last, count)."""
    candles = vision_candles(SYMBOL)[:500]
    ch.command("SYSTEM STOP MERGES ohlcv_candles")
    insert_block(ch, CandleBlock.from_candles(SYMBOL, "1m", candles), skip_existing=False)
    insert_block(ch, CandleBlock.from_candles(SYMBOL, "1m", candles[100:400]), skip_existing=False)
    parts = ch.query(
        "SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'ohlcv_candles' "
        "AND active"
    ).result_rows[0][0]
    assert parts == 2
    assert ch.query("SELECT count() FROM ohlcv_candles").result_rows[0][0] == 800  # the duplicates are there
    return candles[0].open_time, candles[-1].open_time, len(candles)


def test_api_meta_and_snapshot_count_each_candle_once(
    ch: Client, ch_url: str, ch_db: str, duplicated: tuple[int, int, int]
) -> None:
    first, last, n = duplicated
    queries = CandleQueries(ClientPool(lambda: make_client(ch_url, ch_db)))
    st = Stream(SYMBOL, "1m", 60_000)
    meta = queries.meta(st, sample=1000)
    assert (meta["earliest_open_time"], meta["latest_open_time"], meta["count"]) == (first, last, n)
    assert (meta["sample_bars"], meta["expected_bars"], meta["completeness"]) == (n, n, 1.0)
    snap = queries.snapshot(st, limit=1000)
    assert (snap.count, len(snap.candles)) == (n, n)


def test_continuity_and_reseed_see_each_candle_once(ch: Client, duplicated: tuple[int, int, int]) -> None:
    first, last, n = duplicated
    report = scan(ch, SYMBOL, "1m", start_ms=first, end_ms=last + 60_000, now_ms=last + 10 * 60_000)
    assert (report.present_bars, report.expected_bars, report.gap_count) == (n, n, 0)
    lookup = ClickHouseLookup(ch)
    seeded = lookup.seed(SYMBOL, "1m")
    assert (seeded["first_closed"], seeded["last_closed"], seeded["torn"]) == (first, last, [])
    assert lookup.last_stored(SYMBOL) == last


def test_the_demo_status_line_counts_each_candle_once(
    ch_url: str, ch_db: str, duplicated: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "make_client", lambda url: make_client(url, ch_db))
    stop = threading.Event()
    out = io.StringIO()
    with redirect_stdout(out):
        t = threading.Thread(target=demo._status, args=(ch_url, stop, 0.05))
        t.start()
        for _ in range(200):
            if "candles stored" in out.getvalue():
                break
            stop.wait(0.05)
        stop.set()
        t.join(10)
    line = out.getvalue().splitlines()[0]
    assert line.startswith(f"status      candles stored {duplicated[2]:,}  live appends 0  "), line
