"""``ohlcv features rebuild`` run as a user runs it: subprocesses on one chDB holding the real
XRP/USDT dump, bulk-imported once for the module (so no feature row exists until the rebuild)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ohlcv.test_cli_scan import Cli
from tests.streams.test_continuity import XRP_FIRST, XRP_JSON, XRP_LAST, XRP_PRESENT


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    run = Cli(tmp_path_factory.mktemp("features"))
    loaded = run("import", str(XRP_JSON), "--mode", "bulk")
    assert loaded.returncode == 0, loaded.stderr
    return run


def _results(cli: Cli, *args: str) -> tuple[list[dict[str, object]], str, str]:
    out = cli.root / "rebuild.json"
    done = cli("features", "rebuild", "--json", str(out), *args)
    assert done.returncode == 0, done.stderr
    results: list[dict[str, object]] = json.loads(Path(out).read_text())
    return results, done.stdout, done.stderr


def test_rebuild_writes_every_row_once_then_nothing(cli: Cli) -> None:
    (first,), stdout, _ = _results(cli, "--interval", "1m")
    assert f"rebuilt 1 stream(s): {XRP_PRESENT:,} row(s) written of {XRP_PRESENT:,} bar(s)" in stdout
    assert (first["written"], first["missing"], first["unchanged"]) == (XRP_PRESENT, XRP_PRESENT, 0)
    assert (first["from_open_time"], first["to_open_time"]) == (XRP_FIRST, XRP_LAST)
    row = next(line.split() for line in stdout.splitlines() if line.split()[:2] == ["XRPUSDT", "1m"])
    assert row[2:6] == [f"{XRP_PRESENT:,}"] * 3 + ["0"]
    span = "span XRPUSDT 1m  2021-04-02T00:00:00Z .. 2021-05-14T20:26:00Z  derived from 2021-04-02T00:00:00Z"
    assert f"{span} ({XRP_PRESENT:,} bars)" in stdout
    # every configured stream by default: the 5m candles the bulk import built get their rows
    results, stdout, stderr = _results(cli)
    assert [(r["interval"], r["in_range"], r["written"]) for r in results] == [
        ("1m", XRP_PRESENT, 0),
        ("5m", 12_255, 12_255),
    ]
    assert f"12,255 row(s) written of {XRP_PRESENT + 12_255:,} bar(s)" in stdout
    # a range with no stored candle says so
    _, _, stderr = _results(cli, "--interval", "5m", "--from", "2022-01-01", "--to", "2022-01-02")
    assert "note: XRPUSDT 5m has no stored closed candle in the range" in stderr


def test_a_day_is_derived_from_the_start_of_its_run(cli: Cli) -> None:
    (day,), _, stderr = _results(cli, "--interval", "1m", "--from", "2021-04-20", "--to", "2021-04-21")
    # the day holds the first real outage (150 bars); its first bar's run starts with the dump
    assert (day["in_range"], day["derived_from"], day["from_open_time"]) == (1290, XRP_FIRST, 1618876800000)
    assert day["derived"] == (1618963200000 - XRP_FIRST) // 60_000 - 150
    assert "rows after --to" not in stderr  # nothing was written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "yesterday"), "--from: "),
        (("--from", "2021-04-21", "--to", "2021-04-20"), "is not before --to"),
        (("--interval", "7m"), "is not a Binance interval"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(cli: Cli, args: tuple[str, ...], message: str) -> None:
    done = cli("features", "rebuild", *args)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
