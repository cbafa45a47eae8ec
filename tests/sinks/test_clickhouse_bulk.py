"""Bulk load into the real chDB engine: exact counts, values, the real gaps, idempotent re-imports."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from schemas.klines import Candle
from sinks.clickhouse_bulk import COLUMNS, TABLE, insert_block, insert_candles, load_files
from streams.importers import BadRow, CandleBlock, ImportFileError, read_block, read_vision
from tests.streams.test_importers import LINK, VISION_DIR, XRP, _ms, link_lines, to_micros, write_csv

pytestmark = pytest.mark.clickhouse

GAPS_SQL = """
SELECT toUnixTimestamp64Milli(prev) AS after, dateDiff('minute', prev, open_time) - 1 AS missing
FROM (
    SELECT open_time,
           lagInFrame(open_time) OVER (ORDER BY open_time ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev
    FROM ohlcv_candles FINAL
    WHERE symbol = {symbol:String} AND interval = '1m'
)
WHERE prev > toDateTime64(0, 3) AND missing > 0
ORDER BY after
"""


#: per symbol: a checksum of the market values (NULLs included), rows, first open, last close (ms)
VALUES_SQL = f"""
SELECT symbol,
       sum(cityHash64(toString(tuple(open_time, close_time, open, high, low, close, volume, quote_volume,
                                     trades, taker_buy_base, taker_buy_quote, is_closed, event_time)))),
       count(), toUnixTimestamp64Milli(min(open_time)), toUnixTimestamp64Milli(max(close_time))
FROM {TABLE} FINAL GROUP BY symbol ORDER BY symbol
"""


def snapshot(ch: Client) -> tuple[int, int, int]:
    """(rows under FINAL, checksum of every column under FINAL, physical rows)."""
    final = ch.query(f"SELECT count(), sum(cityHash64(toString(tuple(*)))) FROM {TABLE} FINAL").result_rows[0]
    physical = ch.query(f"SELECT count() FROM {TABLE}").result_rows[0][0]
    return int(final[0]), int(final[1]), int(physical)


def test_xrp_dump_loads_every_row_and_the_real_outages_stay_missing(ch: Client) -> None:
    result = load_files(ch, [XRP])
    assert (result.rows_read, result.inserted, result.skipped_existing) == (61_274, 61_274, 0)
    count, nulls, sources, versions = ch.query(
        f"SELECT count(), countIf(quote_volume IS NULL AND trades IS NULL AND taker_buy_base IS NULL "
        f"AND taker_buy_quote IS NULL), groupUniqArray(source), groupUniqArray(version) FROM {TABLE} FINAL"
    ).result_rows[0]
    assert count == nulls == 61_274
    assert (sources, versions) == (["import"], [1])
    gaps = ch.query(GAPS_SQL, parameters={"symbol": "XRPUSDT"}).result_rows
    assert gaps == [(_ms("2021-04-20 01:59"), 150), (_ms("2021-04-25 04:01"), 283)]


def test_vision_zip_loads_exactly_its_rows_with_the_csv_values(ch: Client) -> None:
    result = load_files(ch, [LINK])
    assert (result.rows_read, result.inserted) == (40_320, 40_320)
    rows = ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), open, high, low, close, volume, "
        "toUnixTimestamp64Milli(close_time), quote_volume, trades, taker_buy_base, taker_buy_quote, "
        "symbol, interval, is_closed, source, revision, version, bars, toUnixTimestamp64Milli(event_time) "
        f"FROM {TABLE} FINAL ORDER BY open_time"
    ).result_rows
    csv = [line.split(",") for line in link_lines()[1:]]
    assert len(rows) == len(csv) == 40_320
    for got, f in zip(rows, csv, strict=True):
        assert got[0] == int(f[0]) and got[6] == int(f[6]) == got[18]
        assert got[1:6] == tuple(float(x) for x in f[1:6])
        assert (got[7], got[8], got[9], got[10]) == (float(f[7]), int(f[8]), float(f[9]), float(f[10]))
        assert got[11:18] == ("LINKUSDT", "1m", True, "import", 0, 1, None)
    assert ch.query(GAPS_SQL, parameters={"symbol": "LINKUSDT"}).result_rows == []


def test_importing_twice_changes_nothing(ch: Client) -> None:
    paths = sorted(VISION_DIR.glob("*.zip"))
    first = load_files(ch, paths)
    assert first.inserted == 3 * 40_320
    before = snapshot(ch)
    assert before[0] == before[2] == 3 * 40_320
    again = load_files(ch, paths)
    assert (again.inserted, again.skipped_existing) == (0, 3 * 40_320)
    assert snapshot(ch) == before  # not even ingested_at moved: nothing was written
    # the candle-object path skips them too
    assert insert_candles(ch, itertools.islice(read_vision(LINK), 1000)) == 0
    assert snapshot(ch) == before


def test_import_never_beats_a_repair_and_replaces_a_partial(ch: Client) -> None:
    block = read_block(LINK).slice(0, 10)
    repaired, partial = block.candles()[3], block.candles()[5]
    cols = list(COLUMNS[:-1])  # ingested_at defaults

    def row(c: Candle, *, close: float, closed: bool, source: str, revision: int) -> list[object]:
        return [
            c.symbol, c.interval, c.open_time, c.close_time, c.open, max(c.high, close), min(c.low, close),
            close, c.volume, c.quote_volume, c.trades, c.taker_buy_base, c.taker_buy_quote, closed, source,
            None, revision, revision * 2 + int(closed), c.close_time,
        ]  # fmt: skip

    ch.insert(
        TABLE,
        [
            row(repaired, close=repaired.close + 1, closed=True, source="rest", revision=1),
            row(partial, close=partial.close, closed=False, source="ws", revision=0),
        ],
        column_names=cols,
    )
    # even without the skip, version decides: an import (version 1) loses to a repair (3)
    assert insert_block(ch, block, skip_existing=False) == 10
    # and with the skip (the default) the repaired slot is not even written again
    assert insert_block(ch, block) == 0
    final = dict(
        ch.query(
            "SELECT toUnixTimestamp64Milli(open_time), (close, source, revision, is_closed) "
            f"FROM {TABLE} FINAL"
        ).result_rows
    )
    assert len(final) == 10
    assert final[repaired.open_time] == (repaired.close + 1, "rest", 1, True)
    assert final[partial.open_time] == (partial.close, "import", 0, True)


def test_skip_writes_only_the_missing_slots(ch: Client) -> None:
    block = read_block(LINK).slice(0, 100)
    assert insert_block(ch, block.slice(20, 60)) == 40
    assert insert_block(ch, block) == 60
    assert snapshot(ch)[0] == 100
    assert ch.query(f"SELECT count() FROM {TABLE}").result_rows[0][0] == 100


def test_microsecond_file_loads_the_same_values(ch: Client, tmp_path: Path) -> None:
    lines = link_lines()[:1001]
    write_csv(tmp_path / "LINKUSDT-1m-2026-02.csv", lines)
    (tmp_path / "us").mkdir()
    us = write_csv(tmp_path / "us" / "LINKUSDT-1m-2026-02.csv", [lines[0], *map(to_micros, lines[1:])])
    assert load_files(ch, [us]).inserted == 1000
    values = ch.query(VALUES_SQL).result_rows
    ms_candles = list(read_vision(tmp_path / "LINKUSDT-1m-2026-02.csv"))
    ch.command(f"TRUNCATE TABLE {TABLE}")
    assert insert_block(ch, CandleBlock.from_candles("LINKUSDT", "1m", ms_candles)) == 1000
    assert ch.query(VALUES_SQL).result_rows == values
    assert values[0][2:] == (1000, int(lines[1].split(",")[0]), int(lines[-1].split(",")[6]))


def test_bad_rows_dead_letter_mode_loads_all_good_rows(ch: Client, tmp_path: Path) -> None:
    lines = link_lines()[:501]
    lines[100] = lines[100].replace(",", ";", 3)
    path = write_csv(tmp_path / "LINKUSDT-1m-2026-02.csv", lines)
    seen: list[BadRow] = []
    result = load_files(ch, [path, XRP], mode="dead-letter", on_bad_row=seen.append)
    assert [(b.source, b.line) for b in seen] == [(f"{path}:101", 101)]
    assert (result.files, result.rows_read, result.inserted) == (2, 499 + 61_274, 499 + 61_274)
    assert snapshot(ch)[0] == 499 + 61_274


def test_strict_mode_stops_at_the_bad_file_naming_the_line(ch: Client, tmp_path: Path) -> None:
    rows = orjson.loads(XRP.read_bytes())[:300]
    rows[41][4] = None
    bad = tmp_path / "XRP_USDT-1m.json"
    bad.write_bytes(orjson.dumps(rows))
    with pytest.raises(ImportFileError, match=r"XRP_USDT-1m.json:42: close=None is not a number"):
        load_files(ch, [bad])
    assert snapshot(ch)[0] == 0


def test_candle_path_writes_what_the_block_path_writes(ch: Client) -> None:
    candles = list(itertools.islice(read_vision(LINK), 2000))
    xrp = read_block(XRP).slice(0, 500).candles()
    assert insert_candles(ch, [*candles, *xrp], block_rows=700) == 2500
    via_candles = ch.query(VALUES_SQL).result_rows
    ch.command(f"TRUNCATE TABLE {TABLE}")
    insert_block(ch, read_block(LINK).slice(0, 2000))
    insert_block(ch, read_block(XRP).slice(0, 500))
    via_blocks = ch.query(VALUES_SQL).result_rows
    assert via_candles == via_blocks
    assert [(r[0], r[2]) for r in via_blocks] == [("LINKUSDT", 2000), ("XRPUSDT", 500)]
