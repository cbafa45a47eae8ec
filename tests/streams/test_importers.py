"""History importers on the real bundled files, with faults built in tmp files by each test."""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from pyarrow import feather

from schemas.klines import Candle, candle_from_raw, raw_from_candle
from streams.importers import (
    BadRow,
    CandleBlock,
    ImportFileError,
    detect_format,
    guess_market,
    read_block,
    read_candles,
    read_freqtrade,
    read_vision,
    read_vision_block,
)
from tests.conftest import DATA

XRP = DATA / "freqtrade" / "binance" / "XRP_USDT-1m.json"
VISION_DIR = DATA / "binance-vision" / "futures-um" / "1m"
LINK = VISION_DIR / "LINKUSDT-1m-2026-02.zip"
MINUTE = 60_000


def _ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp() * 1000)


def link_lines() -> list[str]:
    """The LINK CSV exactly as shipped, read without our code: header + 40,320 rows."""
    return list(_link_lines())


@functools.cache
def _link_lines() -> tuple[str, ...]:
    with zipfile.ZipFile(LINK) as zf:
        return tuple(zf.read("LINKUSDT-1m-2026-02.csv").decode().splitlines())


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def to_micros(line: str) -> str:
    """A Vision row with open/close time in µs, as spot files are from 2025 on."""
    f = line.split(",")
    f[0] = str(int(f[0]) * 1000)
    f[6] = str(int(f[6]) * 1000 + 999)
    return ",".join(f)


def gaps(candles: list[Candle]) -> list[tuple[int, int]]:
    out = []
    for prev, cur in itertools.pairwise(candles):
        missing = (cur.open_time - prev.open_time) // MINUTE - 1
        if missing:
            out.append((prev.open_time, missing))
    return out


# --- the real files -----------------------------------------------------------------------


def test_xrp_dump_has_every_row_and_both_real_outages_unfilled() -> None:
    candles = list(read_candles(XRP))
    assert len(candles) == 61_274
    assert gaps(candles) == [(_ms("2021-04-20 01:59"), 150), (_ms("2021-04-25 04:01"), 283)]
    first = candles[0]
    assert (first.symbol, first.interval, first.open_time) == ("XRPUSDT", "1m", 1617321600000)
    assert (first.open, first.high, first.low, first.close, first.volume) == (
        0.57061, 0.57299, 0.57061, 0.57241, 752433.3,
    )  # fmt: skip
    assert first.close_time == first.open_time + MINUTE - 1 == first.event_time
    # freqtrade has no quote volume, trade count or taker volumes: None, never invented
    assert all(
        c.quote_volume is None and c.trades is None and c.taker_buy_base is None and c.taker_buy_quote is None
        for c in candles
    )
    assert {(c.source, c.is_closed) for c in candles} == {("import", True)}
    # the block reader (bulk path) yields exactly the same candles
    assert read_block(XRP).candles() == candles


def test_vision_zip_imports_every_row_with_the_csv_values() -> None:
    lines = link_lines()
    assert lines[0].startswith("open_time,open,high")
    rows = [line.split(",") for line in lines[1:]]
    candles = list(read_vision(LINK))
    assert len(candles) == len(rows) == 40_320
    for c, f in zip(candles, rows, strict=True):
        assert (c.symbol, c.interval, c.source, c.is_closed) == ("LINKUSDT", "1m", "import", True)
        assert c.open_time == int(f[0]) and c.close_time == int(f[6]) == c.event_time
        assert (c.open, c.high, c.low, c.close, c.volume) == tuple(float(x) for x in f[1:6])
        assert c.quote_volume == float(f[7]) and c.trades == int(f[8])
        assert c.taker_buy_base == float(f[9]) and c.taker_buy_quote == float(f[10])
    assert gaps(candles) == []
    # the pyarrow fast path parses every float exactly as Python does
    block = read_vision_block(LINK)
    assert block.candles() == candles


def test_every_imported_row_passes_the_raw_topic_contract() -> None:
    for c in [*itertools.islice(read_vision(LINK), 500), *itertools.islice(read_candles(XRP), 500)]:
        back = candle_from_raw(raw_from_candle(c, source="import", received_at=1))
        assert back.same_values(c) and back.open_time == c.open_time


# --- timestamps and headers ---------------------------------------------------------------


def test_microsecond_rows_give_the_same_candles(tmp_path: Path) -> None:
    lines = link_lines()[:301]
    ms = write_csv(tmp_path / "LINKUSDT-1m-2026-02.csv", lines)
    (tmp_path / "us").mkdir()
    us = write_csv(tmp_path / "us" / "LINKUSDT-1m-2026-02.csv", [lines[0], *map(to_micros, lines[1:])])
    assert "1769904000000000," in us.read_text()
    expected = list(read_vision(ms))
    assert len(expected) == 300
    assert list(read_vision(us)) == expected
    assert read_vision_block(us).candles() == expected


def test_units_are_decided_per_row(tmp_path: Path) -> None:
    lines = link_lines()[1:201]
    mixed = [line if i % 2 else to_micros(line) for i, line in enumerate(lines)]
    path = write_csv(tmp_path / "LINKUSDT-1m-2026-02.csv", mixed)
    candles = list(read_vision(path))
    assert [c.open_time for c in candles] == [int(line.split(",")[0]) for line in lines]
    assert read_vision_block(path).candles() == candles


def test_header_is_optional(tmp_path: Path) -> None:
    lines = link_lines()[:101]
    with_header = write_csv(tmp_path / "LINKUSDT-1m-2026-02.csv", lines)
    (tmp_path / "nh").mkdir()
    without = write_csv(tmp_path / "nh" / "LINKUSDT-1m-2026-02.csv", lines[1:])
    # and zipped without header, as older Vision files are
    zipped = tmp_path / "nh" / "LINKUSDT-1m-2026-02.zip"
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("LINKUSDT-1m-2026-02.csv", "\n".join(lines[1:]) + "\n")
    expected = list(read_vision(with_header))
    assert len(expected) == 100
    for path in (without, zipped):
        assert list(read_vision(path)) == expected
        assert read_vision_block(path).candles() == expected


def test_crlf_and_blank_lines_are_tolerated(tmp_path: Path) -> None:
    lines = link_lines()[:51]
    path = tmp_path / "LINKUSDT-1m-2026-02.csv"
    path.write_bytes(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert len(list(read_vision(path))) == 50
    assert len(read_vision_block(path)) == 50


# --- bad rows: strict and dead-letter -----------------------------------------------------


def _with_bad_line(tmp_path: Path, line_no: int, text: str, rows: int = 100) -> Path:
    lines = link_lines()[: rows + 1]
    lines[line_no - 1] = text
    return write_csv(tmp_path / "LINKUSDT-1m-2026-02.csv", lines)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1769904000000,9.98,garbage", "expected 12 columns, found 3"),
        ("1769904240000,9.98,abc,9.97,9.98,1,1769904299999,1,1,1,1,0", "high='abc' is not a number"),
        ("1769904240000,9.98,9.99,9.97,9.98,-1,1769904299999,1,1,1,1,0", "volume='-1'"),
        ("1769904240000,9.98,9.90,9.97,9.98,1,1769904299999,1,1,1,1,0", "prices out of order"),
        ("1769904241000,9.98,9.99,9.97,9.98,1,1769904300999,1,1,1,1,0", "not aligned to 1m"),
        ("1769904240000,9.98,9.99,9.97,9.98,1,1769904299998,1,1,1,1,0", "close time"),
        ("1769904240000,9.98,9.99,9.97,9.98,1,1769904299999,1,x,1,1,0", "count='x'"),
    ],
)
def test_strict_mode_names_file_and_line(tmp_path: Path, text: str, reason: str) -> None:
    path = _with_bad_line(tmp_path, 6, text)
    for read in (lambda: list(read_vision(path)), lambda: read_vision_block(path)):
        with pytest.raises(ImportFileError) as info:
            read()
        err = info.value
        assert (err.path, err.line) == (str(path), 6)
        assert reason in err.reason
        assert str(err).startswith(f"{path}:6: ")


def test_dead_letter_mode_hands_over_the_bad_row_and_keeps_the_good_ones(tmp_path: Path) -> None:
    bad_text = "1769904000000,9.98,garbage"
    path = _with_bad_line(tmp_path, 6, bad_text)
    good = [c for i, c in enumerate(itertools.islice(read_vision(LINK), 100)) if i != 4]
    for read in (read_vision, read_vision_block):
        seen: list[BadRow] = []
        result = read(path, mode="dead-letter", on_bad_row=seen.append)
        candles = result.candles() if isinstance(result, CandleBlock) else list(result)
        assert candles == good
        assert len(seen) == 1
        assert seen[0].source == f"{path}:6"
        assert seen[0].line == 6 and seen[0].payload == bad_text
        assert "expected 12 columns" in seen[0].reason


def test_freqtrade_json_bad_row_is_named_by_row(tmp_path: Path) -> None:
    rows = orjson.loads(XRP.read_bytes())[:50]
    rows[9] = [rows[9][0], "x", 1, 1, 1, 1]
    rows[19] = "nonsense"
    path = tmp_path / "XRP_USDT-1m.json"
    path.write_bytes(orjson.dumps(rows))
    with pytest.raises(ImportFileError) as info:
        list(read_freqtrade(path))
    assert info.value.line == 10 and "open='x' is not a number" in str(info.value)
    with pytest.raises(ImportFileError, match=r"XRP_USDT-1m.json:10: "):
        read_block(path)
    seen: list[BadRow] = []
    block = read_block(path, mode="dead-letter", on_bad_row=seen.append)
    assert [b.line for b in seen] == [10, 20]
    assert len(block) == 48
    assert seen[1].payload == '"nonsense"'


def test_dead_letter_mode_needs_a_callback() -> None:
    with pytest.raises(ValueError, match="on_bad_row"):
        list(read_vision(LINK, mode="dead-letter"))


# --- freqtrade formats --------------------------------------------------------------------


def test_freqtrade_csv_iso_and_ms_dates_and_feather_match_the_json(tmp_path: Path) -> None:
    rows = orjson.loads(XRP.read_bytes())[:120]
    expected = list(itertools.islice(read_freqtrade(XRP), 120))
    iso = ["date,open,high,low,close,volume"] + [
        f"{datetime.fromtimestamp(r[0] / 1000, UTC).isoformat(sep=' ')},{r[1]},{r[2]},{r[3]},{r[4]},{r[5]}"
        for r in rows
    ]
    ms_no_header = [",".join(str(x) for x in r) for r in rows]
    iso_path = write_csv(tmp_path / "XRP_USDT-1m.csv", iso)
    assert "2021-04-02 00:00:00+00:00" in iso_path.read_text()
    (tmp_path / "ms").mkdir()
    ms_path = write_csv(tmp_path / "ms" / "XRP_USDT-1m.csv", ms_no_header)
    table = pa.table(
        {
            "date": pa.array([r[0] for r in rows], pa.timestamp("ms", tz="UTC")),
            **{name: pa.array([float(r[i]) for r in rows]) for i, name in enumerate(
                ("open", "high", "low", "close", "volume"), start=1)},
        }
    )  # fmt: skip
    feather_path = tmp_path / "XRP_USDT-1m.feather"
    feather.write_feather(table, feather_path)
    gz_path = tmp_path / "XRP_USDT-1m.json.gz"
    gz_path.write_bytes(gzip.compress(json.dumps(rows).encode()))
    for path in (iso_path, ms_path, feather_path, gz_path):
        assert detect_format(path) == "freqtrade"
        assert list(read_candles(path)) == expected, path
        assert read_block(path).candles() == expected, path


def test_names_give_symbol_and_interval_and_overrides_win(tmp_path: Path) -> None:
    rows = orjson.loads(XRP.read_bytes())[:10]
    futures = tmp_path / "BTC_USDT_USDT-1m-futures.json"
    futures.write_bytes(orjson.dumps(rows))
    assert {(c.symbol, c.interval) for c in read_candles(futures)} == {("BTCUSDT", "1m")}
    assert guess_market(futures) == "usdm"
    assert guess_market(XRP) == "spot"
    assert guess_market(LINK) == "usdm"  # data/binance-vision/futures-um/...
    plain = tmp_path / "history.json"
    plain.write_bytes(orjson.dumps(rows))
    with pytest.raises(ImportFileError, match=r"history.json: cannot tell the symbol and interval"):
        list(read_candles(plain))
    assert {(c.symbol, c.interval) for c in read_candles(plain, symbol="xrp/usdt", interval="1m")} == {
        ("XRPUSDT", "1m")
    }
    # an interval override must fit the data: 1m bars are misaligned as 5m bars
    with pytest.raises(ImportFileError, match=r":2: open time \d+ is not aligned to 5m"):
        list(read_candles(XRP, interval="5m"))
    mark = tmp_path / "BTC_USDT_USDT-1h-mark.json"
    mark.write_bytes(b"[]")
    with pytest.raises(ImportFileError, match="mark candles, not trade candles"):
        list(read_candles(mark))


# --- files that cannot be read at all -----------------------------------------------------


def test_unreadable_files_are_one_error_naming_the_file(tmp_path: Path) -> None:
    not_zip = tmp_path / "LINKUSDT-1m-2026-02.zip"
    not_zip.write_text("open_time,open\n")
    two = tmp_path / "two" / "AVAXUSDT-1m-2026-02.zip"
    two.parent.mkdir()
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", "x")
        zf.writestr("b.csv", "y")
    bad_json = tmp_path / "XRP_USDT-1m.json"
    bad_json.write_text("[[1, 2")
    obj_json = tmp_path / "ETH_USDT-1m.json"
    obj_json.write_text('{"a": 1}')
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello")
    cases = [
        (not_zip, "not a zip file"),
        (two, "expected one CSV in the zip, found a.csv, b.csv"),
        (bad_json, "not valid JSON"),
        (obj_json, "expected a JSON array"),
        (unknown, "unknown format"),
        (tmp_path / "missing" / "LINKUSDT-1m-2026-02.zip", "no such file"),
        (tmp_path / "missing.json", "no such file"),
    ]
    for path, reason in cases:
        for read in (lambda p: list(read_candles(p)), read_block):
            with pytest.raises(ImportFileError) as info:
                read(path)
            assert info.value.path == str(path) and info.value.line is None
            assert reason in str(info.value), (path, str(info.value))


def test_corrupt_zip_member_is_a_file_error(tmp_path: Path) -> None:
    data = bytearray(LINK.read_bytes())
    data[2000:2100] = bytes(100)  # inside the deflated stream
    path = tmp_path / LINK.name
    path.write_bytes(bytes(data))
    with pytest.raises(ImportFileError, match=r"corrupt zip member|not a readable zip"):
        read_vision_block(path)


def test_detect_format_by_name_extension_and_columns(tmp_path: Path) -> None:
    assert detect_format(LINK) == "vision"
    assert detect_format(XRP) == "freqtrade"
    twelve = write_csv(tmp_path / "a.csv", link_lines()[1:3])
    six = write_csv(tmp_path / "b.csv", ["1617321600000,0.57061,0.57299,0.57061,0.57241,752433.3"])
    assert detect_format(twelve) == "vision"
    assert detect_format(six) == "freqtrade"
    assert len(list(read_candles(twelve, symbol="LINKUSDT", interval="1m"))) == 2
    assert len(list(read_candles(six, symbol="XRPUSDT", interval="1m"))) == 1


def test_clean_vision_files_take_the_fast_path_and_dirty_ones_do_not(tmp_path: Path) -> None:
    from streams.importers.vision import _fast_block, read_csv_bytes, vision_spec

    lines = link_lines()[:201]
    (tmp_path / "us").mkdir()
    (tmp_path / "bad").mkdir()
    clean = [
        LINK,
        write_csv(tmp_path / "LINKUSDT-1m-2026-02.csv", lines[1:]),
        write_csv(tmp_path / "us" / "LINKUSDT-1m-2026-02.csv", [lines[0], *map(to_micros, lines[1:])]),
    ]
    for path in clean:
        assert _fast_block(vision_spec(path), read_csv_bytes(path)) is not None, path
    dirty = write_csv(tmp_path / "bad" / "LINKUSDT-1m-2026-02.csv", [*lines[:50], "1,2", *lines[50:]])
    assert _fast_block(vision_spec(dirty), read_csv_bytes(dirty)) is None
