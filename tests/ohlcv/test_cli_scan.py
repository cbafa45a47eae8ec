"""``ohlcv scan`` over any range, run as a user runs it: subprocesses on one chDB holding the real
XRP/USDT dump (Apr-May 2021), bulk-imported once for the module.

The dump's two real exchange outages: 150 bars after 2021-04-20 01:59 and 283 bars after
2021-04-25 04:01. Years later, "the last 365 days" hold none of it; --from/--to and --all do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ohlcv.settings import Settings
from tests.streams.test_continuity import (
    MIN,
    OUT1,
    OUT2,
    XRP_EXPECTED,
    XRP_FIRST,
    XRP_JSON,
    XRP_LAST,
    XRP_PRESENT,
)

OHLCV = Path(sys.executable).parent / "ohlcv"
#: 2021-04-20 00:00 UTC .. 2021-04-21 00:00 UTC: the day of the first outage
DAY_FROM, DAY_TO = 1618876800000, 1618963200000


class Cli:
    def __init__(self, root: Path):
        ours = {name.upper() for name in Settings.model_fields}
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if k not in ours}
        self.env.update({
            "DATA_DIR": str(root / "data"), "CLICKHOUSE_URL": f"chdb://{root / 'ch'}",
            "SYMBOLS": "XRPUSDT", "INTERVALS": "1m", "RESAMPLE_INTERVALS": "5m",
        })  # fmt: skip

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(OHLCV), *args], check=False, cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    def scan_json(self, *args: str) -> list[dict[str, object]]:
        out = self.root / "scan.json"
        done = self("scan", "--interval", "1m", "--json", str(out), *args)
        assert done.returncode == 0, done.stderr
        reports: list[dict[str, object]] = json.loads(out.read_text())
        return reports

    def segments(self) -> list[tuple[int, int, int, str]]:
        """(segment_id, segment_end, missing_bars, state) of the CLI's chDB, read from another process."""
        code = (
            "import json; from ohlcv.infra.clickhouse import make_client; "
            f"c = make_client('chdb://{self.root / 'ch'}'); "
            "print(json.dumps(c.query('SELECT segment_id, segment_end, missing_bars, state FROM "
            "gap_segments FINAL ORDER BY segment_id').result_rows))"
        )
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                             timeout=60, env=self.env)  # fmt: skip
        return [(int(a), int(b), int(n), str(st)) for a, b, n, st in json.loads(out.stdout)]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    run = Cli(tmp_path_factory.mktemp("scan"))
    loaded = run("import", str(XRP_JSON), "--mode", "bulk")
    assert loaded.returncode == 0, loaded.stderr
    assert f"bulk-loaded {XRP_PRESENT:,} rows" in loaded.stdout
    return run


def gaps(*ranges: tuple[int, int, int]) -> list[dict[str, int]]:
    return [{"from_open_time": a, "to_open_time": b, "missing_bars": n} for a, b, n in ranges]


def test_the_last_365_days_of_2021_history_say_why_nothing_is_expected(cli: Cli) -> None:
    done = cli("scan")
    assert done.returncode == 0, done.stderr
    assert "continuity, last 365 days" in done.stdout
    assert "span XRPUSDT 1m  nothing expected (no stored bar in the window)" in done.stdout
    assert "hint: no stored bar in the last 365 days; --all scans the whole stored span" in done.stderr


def test_all_scans_the_whole_stored_span_with_both_outages(cli: Cli) -> None:
    done = cli("scan", "--all")
    assert done.returncode == 0, done.stderr
    assert "continuity, whole stored span" in done.stdout
    row = next(line.split() for line in done.stdout.splitlines() if line.split()[:2] == ["XRPUSDT", "1m"])
    assert row[2:] == ["61,707", "61,274", "99.2983%", "2", "433", "283"]
    assert (
        "span XRPUSDT 1m  2021-04-02T00:00:00Z .. 2021-05-14T20:26:00Z  61,707 bars expected" in done.stdout
    )
    # the import built the 5m candles (RESAMPLE_INTERVALS): the outages' whole buckets are missing
    row5 = next(line.split() for line in done.stdout.splitlines() if line.split()[:2] == ["XRPUSDT", "5m"])
    assert row5[2:4] == ["12,341", "12,255"] and row5[5:7] == ["2", "86"], row5
    assert (
        "span XRPUSDT 5m  2021-04-02T00:00:00Z .. 2021-05-14T20:20:00Z  12,341 bars expected" in done.stdout
    )
    (one,) = cli.scan_json("--all")
    assert one["gaps"] == gaps((OUT1.from_open_time, OUT1.to_open_time, 150),
                               (OUT2.from_open_time, OUT2.to_open_time, 283))  # fmt: skip
    assert (one["expected_bars"], one["present_bars"], one["missing_bars"], one["largest_gap_bars"]) == (
        XRP_EXPECTED, XRP_PRESENT, 433, 283,
    )  # fmt: skip
    assert one["span"] == {
        "from_open_time": XRP_FIRST, "to_open_time": XRP_LAST, "from_iso": "2021-04-02T00:00:00Z",
        "to_iso": "2021-05-14T20:26:00Z", "from_given": False, "to_given": False,
        "expected_bars": XRP_EXPECTED,
    }  # fmt: skip


def test_from_to_scans_one_day_in_iso_and_in_epoch_ms(cli: Cli) -> None:
    done = cli("scan", "--interval", "1m", "--from", "2021-04-20", "--to", "2021-04-21T00:00")
    assert done.returncode == 0, done.stderr
    assert "from 2021-04-20T00:00:00Z to" in done.stdout and "2021-04-21T00:00:00Z (exclusive)" in done.stdout
    assert "span XRPUSDT 1m  2021-04-20T00:00:00Z .. 2021-04-20T23:59:00Z  1,440 bars expected" in done.stdout
    for args in (
        ("--from", "2021-04-20", "--to", "2021-04-21"),
        ("--from", str(DAY_FROM), "--to", str(DAY_TO)),
    ):
        (day,) = cli.scan_json(*args)
        assert (day["expected_bars"], day["present_bars"], day["missing_bars"], day["gap_count"]) == (
            1440, 1290, 150, 1,
        )  # fmt: skip
        assert day["gaps"] == gaps((OUT1.from_open_time, OUT1.to_open_time, 150))
        assert day["completeness_ratio"] == 1290 / 1440 and day["scanned_days"] == 1
    # given bounds count the holes at the edges: ten bars before the dump, both outages
    (edge,) = cli.scan_json("--from", "2021-04-01T23:50", "--to", "2021-04-26")
    assert edge["gaps"] == gaps(
        (XRP_FIRST - 10 * MIN, XRP_FIRST - MIN, 10),
        (OUT1.from_open_time, OUT1.to_open_time, 150),
        (OUT2.from_open_time, OUT2.to_open_time, 283),
    )
    assert (edge["expected_bars"], edge["missing_bars"]) == (24 * 24 * 60 + 10, 443)
    # --from alone ends at the last stored bar; --to alone starts at the first
    (since,) = cli.scan_json("--from", "2021-04-25")
    assert since["span"]["to_iso"] == "2021-05-14T20:26:00Z"  # type: ignore[index]
    assert (since["expected_bars"], since["missing_bars"]) == ((XRP_LAST - 1619308800000) // MIN + 1, 283)
    (until,) = cli.scan_json("--to", "2021-04-25")
    assert until["span"]["from_iso"] == "2021-04-02T00:00:00Z"  # type: ignore[index]
    assert (until["expected_bars"], until["missing_bars"]) == ((1619308800000 - XRP_FIRST) // MIN, 150)


def test_queue_missing_works_for_a_range_and_for_all(cli: Cli) -> None:
    done = cli("scan", "--interval", "1m", "--from", "2021-04-20", "--to", "2021-04-21", "--queue-missing")
    assert done.returncode == 0, done.stderr
    assert cli.segments() == [(OUT1.from_open_time, OUT1.to_open_time, 150, "open")]
    whole = cli("scan", "--interval", "1m", "--all", "--queue-missing")
    assert whole.returncode == 0, whole.stderr
    row = next(line.split() for line in whole.stdout.splitlines() if line.split()[:2] == ["XRPUSDT", "1m"])
    assert row[-1] == "1"  # the second outage; the first has its segment already
    assert cli.segments() == [
        (OUT1.from_open_time, OUT1.to_open_time, 150, "open"),
        (OUT2.from_open_time, OUT2.to_open_time, 283, "open"),
    ]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("--days", "30", "--from", "2021-04-20"),
         "error: --days and --from/--to are mutually exclusive: choose one window"),
        (("--all", "--to", "2021-04-20"),
         "error: --from/--to and --all are mutually exclusive: choose one window"),
        (("--all", "--days", "7"), "error: --days and --all are mutually exclusive: choose one window"),
        (("--from", "2021-05-01", "--to", "2021-04-01"),
         "error: --from 2021-05-01T00:00:00Z is not before --to 2021-04-01T00:00:00Z: "
         "the window would be empty"),
        (("--from", "2021-04-20", "--to", "2021-04-20"),
         "error: --from 2021-04-20T00:00:00Z is not before --to 2021-04-20T00:00:00Z: "
         "the window would be empty"),
        (("--from", "20210420"),
         "error: --from: '20210420' is before 1973 as epoch ms; "
         "epoch seconds? give milliseconds (20210420000)"),
        (("--to", "2021-13-01"),
         "error: --to: '2021-13-01' is neither epoch ms nor an ISO date/time "
         "like 2021-03-01 or 2021-03-01T12:00"),
    ],
)  # fmt: skip
def test_bad_windows_are_one_line_and_exit_2(cli: Cli, args: tuple[str, ...], line: str) -> None:
    proc = cli("scan", *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.splitlines() == [line] and proc.stdout == ""


def test_a_start_more_than_20_years_of_1m_back_is_refused_before_any_scan(cli: Cli) -> None:
    proc = cli("scan", "--interval", "1m", "--from", "1990-01-01")
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: --from 1990-01-01T00:00:00Z .. now is ")
    assert "bars of 1m, more than the 10,512,000 (20 years of 1m) one scan covers" in line
    # the same start on daily bars is a few thousand bars: scanned, every day missing but the dump's
    daily = cli("scan", "--interval", "1d", "--from", "1990-01-01", "--to", "2021-01-01")
    assert daily.returncode == 0, daily.stderr
    assert (
        "span XRPUSDT 1d  1990-01-01T00:00:00Z .. 2020-12-31T00:00:00Z  11,323 bars expected" in daily.stdout
    )
