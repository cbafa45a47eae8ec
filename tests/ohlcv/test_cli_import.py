"""``ohlcv import`` run as a user runs it: a subprocess with its own DATA_DIR and ClickHouse."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from ohlcv.settings import Settings
from schemas.events import DeadLetter
from schemas.klines import candle_from_raw
from schemas.topics import DEAD_LETTER, RAW_KLINES
from tests.streams.test_importers import XRP
from tests.streams.test_replay import consume

OHLCV = Path(sys.executable).parent / "ohlcv"


def run(cwd: Path, *args: str, **values: str) -> subprocess.CompletedProcess[str]:
    ours = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update({"DATA_DIR": str(cwd / "data"), "CLICKHOUSE_URL": f"chdb://{cwd / 'ch'}", **values})
    argv = [str(OHLCV), "import", *args]
    return subprocess.run(argv, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def count_rows(ch_path: Path, interval: str = "1m") -> tuple[int, int]:
    """(rows under FINAL, physical rows) of one interval in the CLI's chDB, read from another process."""
    where = f"WHERE interval = '{interval}'"
    code = (
        "from ohlcv.infra.clickhouse import make_client; "
        f"c = make_client('chdb://{ch_path}'); "
        f'print(c.query("SELECT count() FROM ohlcv_candles FINAL {where}").result_rows[0][0], '
        f'c.query("SELECT count() FROM ohlcv_candles {where}").result_rows[0][0])'
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60)
    final, physical = out.stdout.split()
    return int(final), int(physical)


def xrp_slice(tmp_path: Path, n: int, bad_row: int | None = None) -> Path:
    rows = orjson.loads(XRP.read_bytes())[:n]
    if bad_row is not None:
        rows[bad_row - 1] = [rows[bad_row - 1][0], "oops", 1, 1, 1, 1]
    path = tmp_path / "XRP_USDT-1m.json"
    path.write_bytes(orjson.dumps(rows))
    return path


def test_bulk_import_loads_every_row_shows_progress_and_is_idempotent(tmp_path: Path) -> None:
    first = run(tmp_path, str(XRP), "--mode", "bulk")
    assert first.returncode == 0, first.stderr
    assert "bulk-loaded 61,274 rows of 61,274 from 1 file(s) into ClickHouse (0 already" in first.stdout
    assert "bulk load" in first.stderr and "61,274 rows" in first.stderr and "rows/s" in first.stderr
    # the higher candles of the loaded bars (the default RESAMPLE_INTERVALS), built in ClickHouse
    five = count_rows(tmp_path / "ch", "5m")
    assert f"resampled the stored 1m bars: {five[0]:,} 5m, " in first.stdout and five[0] > 12_000
    again = run(tmp_path, str(XRP), "--mode", "bulk")
    assert again.returncode == 0, again.stderr
    assert "bulk-loaded 0 rows of 61,274 from 1 file(s) into ClickHouse (61,274 already" in again.stdout
    assert "resampled" not in again.stdout
    assert count_rows(tmp_path / "ch") == (61_274, 61_274)
    assert count_rows(tmp_path / "ch", "5m") == five


def test_missing_file_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    missing = tmp_path / "LINKUSDT-1m-2026-03.zip"
    proc = run(tmp_path, str(XRP), str(missing), "--mode", "bulk")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: {missing}: no such file"]
    assert not (tmp_path / "ch").exists()  # refused before touching anything


def test_strict_bad_row_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    path = xrp_slice(tmp_path, 30, bad_row=3)
    proc = run(tmp_path, str(path), "--mode", "bulk", "--strict")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == f"error: {path}:3: open='oops' is not a number"
    assert "Traceback" not in proc.stderr


def test_replay_without_a_broker_or_a_running_stack_is_refused(tmp_path: Path) -> None:
    """A broker of its own would take the candles and stop with the command: nobody would read them."""
    proc = run(tmp_path, str(xrp_slice(tmp_path, 30)), "--symbol", "XRPUSDT", "--interval", "1m")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: --mode replay needs the broker the candle topology reads: no KAFKA_BROKER_ADDRESS and no "
        f"running `ohlcv up` in DATA_DIR={tmp_path / 'data'}; start `ohlcv up` first (same DATA_DIR), set "
        "KAFKA_BROKER_ADDRESS, or load straight into ClickHouse with --mode bulk"
    ]
    assert "replayed" not in proc.stdout
    assert not (tmp_path / "data" / "logs" / "broker.log").exists()  # no broker was started


def test_bulk_only_options_are_refused(tmp_path: Path) -> None:
    proc = run(tmp_path, str(XRP), "--mode", "bulk", "--speed", "60")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: --speed and --partials apply to --mode replay only"]


@pytest.mark.broker
def test_dead_letter_bulk_loads_good_rows_and_dead_letters_the_bad_one(tmp_path: Path, broker: str) -> None:
    path = xrp_slice(tmp_path, 30, bad_row=3)
    proc = run(tmp_path, str(path), "--mode", "bulk", "--dead-letter", KAFKA_BROKER_ADDRESS=broker)
    assert proc.returncode == 0, proc.stderr
    assert "bulk-loaded 29 rows of 29" in proc.stdout
    assert f"1 bad rows sent to the dead-letter topic (first: {path}:3: open='oops' is not" in proc.stderr
    assert count_rows(tmp_path / "ch") == (29, 29)
    records = consume(broker, DEAD_LETTER.name, 1, want=lambda r: r[2].get("source") == f"{path}:3")
    assert len(records) == 1
    letter = DeadLetter.model_validate(records[0][2])
    assert (records[0][1], letter.reason) == (path.name, "open='oops' is not a number")
    assert letter.stage == "import.parse"


@pytest.mark.broker
def test_replay_mode_produces_partials_and_closes_to_the_raw_topic(tmp_path: Path, broker: str) -> None:
    symbol = f"T{uuid.uuid4().hex[:6].upper()}USDT"
    path = xrp_slice(tmp_path, 30)
    proc = run(tmp_path, str(path), "--partials", "1", "--symbol", symbol, KAFKA_BROKER_ADDRESS=broker)
    assert proc.returncode == 0, proc.stderr
    assert f"replayed 30 candles (+30 partial updates) from 1 file(s) to {RAW_KLINES.name}" in proc.stdout
    assert "rows/s" in proc.stderr
    key = f"{symbol}:1m"
    records = consume(broker, RAW_KLINES.name, 60, want=lambda r: r[1] == key)
    assert len(records) == 60
    candles = [candle_from_raw(v) for _, _, v in records]
    assert [c.is_closed for c in candles] == [False, True] * 30
    opens = [r[0] for r in orjson.loads(path.read_bytes())]
    assert [c.open_time for c in candles if c.is_closed] == opens
    assert {v["source"] for _, _, v in records} == {"replay"}
