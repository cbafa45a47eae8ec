"""Continuity scans and queueing against real chDB, on the real XRP dump and Vision months (tier b).

The XRP dump has two real exchange outages: 150 bars after 2021-04-20 01:59 and 283 bars after
2021-04-25 04:01; the three Vision months are complete.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from prometheus_client import REGISTRY

from ohlcv.settings import Settings
from sinks.clickhouse_bulk import load_files
from streams.backfill import segment_lifecycle
from streams.continuity import (
    DAY_MS,
    MAX_SCAN_BARS,
    ContinuityScheduler,
    MergedSegment,
    MissingRange,
    ScanRangeError,
    parse_time_ms,
    queue_missing,
    scan,
)
from tests.conftest import DATA

MIN = 60_000
XRP_JSON = DATA / "freqtrade" / "binance" / "XRP_USDT-1m.json"
VISION = sorted((DATA / "binance-vision" / "futures-um" / "1m").glob("*.zip"))
XRP_FIRST, XRP_LAST = 1617321600000, 1621023960000
OUT1 = MissingRange(1618883940000 + MIN, 1618893000000 - MIN, 150)
OUT2 = MissingRange(1619323260000 + MIN, 1619340300000 - MIN, 283)
XRP_PRESENT, XRP_EXPECTED = 61_274, 61_274 + 433
#: a clock just after the dump's last candle closed
XRP_NOW = XRP_LAST + MIN

SEGMENT_COLUMNS = [
    "symbol", "interval", "segment_id", "segment_end", "from_open_time", "to_open_time", "missing_bars",
    "state", "detected_at", "repaired_at", "updated_at", "version",
]  # fmt: skip


@pytest.fixture
def xrp(ch: Client) -> Client:
    assert load_files(ch, [XRP_JSON]).inserted == XRP_PRESENT
    return ch


def segments(ch: Client) -> list[tuple[int, int, int, int, int, str]]:
    return [
        (int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), r[5])
        for r in ch.query(
            "SELECT segment_id, segment_end, toUnixTimestamp64Milli(from_open_time), "
            "toUnixTimestamp64Milli(to_open_time), missing_bars, state FROM gap_segments FINAL "
            "WHERE symbol = 'XRPUSDT' AND interval = '1m' ORDER BY segment_id"
        ).result_rows
    ]


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_xrp_dump_reports_exactly_its_two_outages(xrp: Client) -> None:
    report = scan(xrp, "XRPUSDT", "1m", now_ms=XRP_NOW)
    assert report.missing == (OUT1, OUT2)
    assert (report.gap_count, report.missing_bars, report.largest_gap_bars) == (2, 433, 283)
    assert (report.expected_bars, report.present_bars) == (XRP_EXPECTED, XRP_PRESENT)
    assert report.completeness_ratio == XRP_PRESENT / XRP_EXPECTED
    assert (report.first_open_time, report.last_open_time, report.bounded) == (XRP_FIRST, XRP_LAST, False)
    print(f"scan of the XRP dump: {report.elapsed_ms:.1f} ms")
    assert report.to_json() == {
        "symbol": "XRPUSDT",
        "interval": "1m",
        "scanned_days": 365,
        "gap_count": 2,
        "gaps": [
            {"from_open_time": OUT1.from_open_time, "to_open_time": OUT1.to_open_time, "missing_bars": 150},
            {"from_open_time": OUT2.from_open_time, "to_open_time": OUT2.to_open_time, "missing_bars": 283},
        ],
        "completeness_ratio": XRP_PRESENT / XRP_EXPECTED,
        "expected_bars": XRP_EXPECTED,
        "present_bars": XRP_PRESENT,
        "missing_bars": 433,
        "largest_gap_bars": 283,
        "span": {
            "from_open_time": XRP_FIRST,
            "to_open_time": XRP_LAST,
            "from_iso": "2021-04-02T00:00:00Z",
            "to_iso": "2021-05-14T20:26:00Z",
            "from_given": False,
            "to_given": False,
            "expected_bars": XRP_EXPECTED,
        },
    }


def test_unmerged_duplicates_and_partial_rows_change_nothing(xrp: Client) -> None:
    # the same closed rows once more (two parts, not merged) and an in-progress row inside outage 1
    assert load_files(xrp, [XRP_JSON], skip_existing=False).inserted == XRP_PRESENT
    t = OUT1.from_open_time + 10 * MIN
    xrp.insert(
        "ohlcv_candles",
        [["XRPUSDT", "1m", t, t + MIN - 1, 1.0, 1.0, 1.0, 1.0, 1.0, False, "ws", 0, 0, t + 1000]],
        column_names=["symbol", "interval", "open_time", "close_time", "open", "high", "low", "close",
                      "volume", "is_closed", "source", "revision", "version", "event_time"],
    )  # fmt: skip
    assert xrp.query("SELECT count() FROM ohlcv_candles").result_rows[0][0] == 2 * XRP_PRESENT + 1
    report = scan(xrp, "XRPUSDT", "1m", now_ms=XRP_NOW)
    assert report.missing == (OUT1, OUT2)
    assert (report.expected_bars, report.present_bars) == (XRP_EXPECTED, XRP_PRESENT)


def test_explicit_window_counts_leading_and_trailing_holes(xrp: Client) -> None:
    # 10 bars before the data, 5 after it; the start is not aligned (30 s into a bar)
    report = scan(xrp, "XRPUSDT", "1m", start_ms=XRP_FIRST - 10 * MIN - 30_000, end_ms=XRP_LAST + 6 * MIN)
    assert report.bounded
    assert report.missing == (
        MissingRange(XRP_FIRST - 10 * MIN, XRP_FIRST - MIN, 10),
        OUT1,
        OUT2,
        MissingRange(XRP_LAST + MIN, XRP_LAST + 5 * MIN, 5),
    )
    assert (report.expected_bars, report.present_bars) == (XRP_EXPECTED + 15, XRP_PRESENT)
    assert (report.gap_count, report.missing_bars, report.largest_gap_bars) == (4, 448, 283)
    # only bars closed by "now" are expected: the trailing hole stops at the last closed bar
    early = scan(
        xrp, "XRPUSDT", "1m", start_ms=XRP_FIRST, end_ms=XRP_LAST + 60 * MIN, now_ms=XRP_LAST + 4 * MIN
    )
    assert early.missing[-1] == MissingRange(XRP_LAST + MIN, XRP_LAST + 3 * MIN, 3)
    # a window inside an outage is one hole
    inside = scan(xrp, "XRPUSDT", "1m", start_ms=OUT1.from_open_time, end_ms=OUT1.to_open_time + MIN)
    assert (inside.missing, inside.present_bars, inside.completeness_ratio) == ((OUT1,), 0, 0.0)
    # the list may be cut; the counts stay exact
    cut = scan(xrp, "XRPUSDT", "1m", start_ms=XRP_FIRST - 10 * MIN, end_ms=XRP_LAST + 6 * MIN, max_ranges=1)
    assert len(cut.missing) == 1 and (cut.gap_count, cut.missing_bars) == (4, 448)
    # the same window implicit (days, ending at that end) ignores the edges
    implicit = scan(xrp, "XRPUSDT", "1m", days=60, now_ms=XRP_LAST + 6 * MIN)
    assert implicit.missing == (OUT1, OUT2) and implicit.expected_bars == XRP_EXPECTED


#: years after the dump: a stack holding the 2021 history today
YEARS_LATER = XRP_NOW + 5 * 365 * DAY_MS


def test_the_whole_stored_span_and_one_sided_windows(xrp: Client) -> None:
    # years later, the last 365 days hold nothing; days=None is the whole stored span
    assert scan(xrp, "XRPUSDT", "1m", now_ms=YEARS_LATER).expected_bars == 0
    whole = scan(xrp, "XRPUSDT", "1m", days=None, now_ms=YEARS_LATER)
    assert whole.missing == (OUT1, OUT2)
    assert (whole.expected_bars, whole.present_bars) == (XRP_EXPECTED, XRP_PRESENT)
    assert (whole.gap_count, whole.missing_bars, whole.largest_gap_bars) == (2, 433, 283)
    assert (whole.span_from_ms, whole.span_to_ms, whole.bounded) == (XRP_FIRST, XRP_LAST, False)
    assert (whole.window_start_ms, whole.window_end_ms) == (None, None)
    assert whole.scanned_days == (XRP_LAST + MIN - XRP_FIRST) / DAY_MS
    # a given start counts the leading hole; the end is the last stored bar
    since = scan(xrp, "XRPUSDT", "1m", start_ms=XRP_FIRST - 7 * MIN, now_ms=YEARS_LATER)
    assert since.missing == (MissingRange(XRP_FIRST - 7 * MIN, XRP_FIRST - MIN, 7), OUT1, OUT2)
    assert (since.span_from_ms, since.span_to_ms) == (XRP_FIRST - 7 * MIN, XRP_LAST)
    assert (since.expected_bars, since.missing_bars, since.start_given, since.end_given) == (
        XRP_EXPECTED + 7, 440, True, False,
    )  # fmt: skip
    # a given end (exclusive) counts the trailing hole; the start is the first stored bar
    until = scan(xrp, "XRPUSDT", "1m", end_ms=OUT1.from_open_time + 10 * MIN, now_ms=YEARS_LATER)
    assert until.missing == (MissingRange(OUT1.from_open_time, OUT1.from_open_time + 9 * MIN, 10),)
    assert (until.span_from_ms, until.span_to_ms) == (XRP_FIRST, OUT1.from_open_time + 9 * MIN)
    assert until.expected_bars == (OUT1.from_open_time - XRP_FIRST) // MIN + 10
    assert until.present_bars == (OUT1.from_open_time - XRP_FIRST) // MIN
    # no stored bar and a stored edge: nothing was expected
    empty = scan(xrp, "BTCUSDT", "1m", start_ms=XRP_FIRST, now_ms=YEARS_LATER)
    assert (empty.expected_bars, empty.completeness_ratio, empty.span_from_ms, empty.missing) == (
        0, None, None, (),
    )  # fmt: skip


def test_windows_that_cannot_be_scanned_name_the_bound(xrp: Client) -> None:
    with pytest.raises(ScanRangeError) as after:
        scan(xrp, "XRPUSDT", "1m", start_ms=XRP_LAST, end_ms=XRP_FIRST)
    assert after.value.field == "from"
    assert str(after.value) == (
        "from: 2021-05-14T20:26:00Z is not before to (2021-04-02T00:00:00Z): the window would be empty"
    )
    with pytest.raises(ScanRangeError, match="is not before to"):
        scan(xrp, "XRPUSDT", "1m", start_ms=XRP_FIRST, end_ms=XRP_FIRST)
    # 1m from 1990 to now is more than 20 years of bars; 1d over the same range is not
    start_1990 = parse_time_ms("1990-01-01")
    with pytest.raises(ScanRangeError) as absurd:
        scan(xrp, "XRPUSDT", "1m", start_ms=start_1990, now_ms=YEARS_LATER)
    assert absurd.value.field == "from" and "more than the 10,512,000 (20 years of 1m)" in str(absurd.value)
    assert MAX_SCAN_BARS == 10_512_000
    daily = scan(xrp, "XRPUSDT", "1d", start_ms=start_1990, end_ms=YEARS_LATER, now_ms=YEARS_LATER)
    assert daily.expected_bars == (YEARS_LATER - start_1990) // DAY_MS and daily.present_bars == 0
    # a stored start is not limited: the span is what is stored
    assert scan(xrp, "XRPUSDT", "1m", days=100_000, now_ms=YEARS_LATER).expected_bars == XRP_EXPECTED


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2021-04-02", XRP_FIRST),
        ("2021-04-02T00:00", XRP_FIRST),
        ("2021-05-14T20:26", XRP_LAST),
        ("2021-05-14T22:26:00+02:00", XRP_LAST),
        ("2021-05-14T20:26:00Z", XRP_LAST),
        (" 1617321600000 ", XRP_FIRST),
    ],
)
def test_times_are_epoch_ms_or_iso_utc(text: str, ms: int) -> None:
    assert parse_time_ms(text) == ms


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2021-13-01", "neither epoch ms nor an ISO date/time"),
        ("yesterday", "neither epoch ms nor an ISO date/time"),
        ("-5", "neither epoch ms nor an ISO date/time"),
        ("1617321600", "epoch seconds? give milliseconds (1617321600000)"),
        ("1969-12-31", "before 1970-01-01"),
        ("2300-01-01", "after 2299-12-31"),
        ("99999999999999999", "after 2299-12-31"),
    ],
)
def test_bad_times_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_time_ms(text)


def test_vision_months_are_complete(ch: Client) -> None:
    load_files(ch, VISION)
    for path in VISION:
        symbol = path.name.split("-")[0]
        report = scan(ch, symbol, "1m")  # the default window: the last 365 days, to now
        assert report.missing == ()
        assert (report.expected_bars, report.present_bars) == (40_320, 40_320)
        assert report.completeness_ratio == 1.0 and report.largest_gap_bars == 0
    nothing = scan(ch, "BTCUSDT", "1m")
    assert (nothing.expected_bars, nothing.present_bars, nothing.completeness_ratio) == (0, 0, None)


def test_queue_missing_opens_each_outage_once(xrp: Client) -> None:
    report = scan(xrp, "XRPUSDT", "1m", now_ms=XRP_NOW)
    before = int(time.time() * 1000)
    first = queue_missing(xrp, report)
    assert first.opened == (OUT1, OUT2) and first.merged == () and first.skipped == 0
    assert segments(xrp) == [
        (OUT1.from_open_time, OUT1.to_open_time, OUT1.from_open_time, OUT1.to_open_time, 150, "open"),
        (OUT2.from_open_time, OUT2.to_open_time, OUT2.from_open_time, OUT2.to_open_time, 283, "open"),
    ]
    detected = [s.detected_at for s in segment_lifecycle(xrp, "XRPUSDT", "1m")]
    assert all(before <= d <= int(time.time() * 1000) for d in detected)
    second = queue_missing(xrp, report)
    assert (second.opened, second.merged, second.skipped) == ((), (), 2)
    assert xrp.query("SELECT count() FROM gap_segments").result_rows[0][0] == 2


def test_merge_recounts_missing_bars_from_stored_candles(xrp: Client) -> None:
    now = int(time.time() * 1000)
    # a stale open segment (e.g. an earlier scan) reaching 50 bars past outage 1 into stored candles;
    # its missing_bars is an estimate that is wrong by now
    stale_id, stale_end = OUT1.from_open_time + 100 * MIN, OUT1.to_open_time + 50 * MIN
    # and an exchange gap covering the first 100 bars of outage 2 (not mergeable: final)
    ex_id, ex_end = OUT2.from_open_time, OUT2.from_open_time + 99 * MIN
    xrp.insert(
        "gap_segments",
        [["XRPUSDT", "1m", stale_id, stale_end, stale_id, stale_end, 101, "open", now - 5000, None, now, now],
         ["XRPUSDT", "1m", ex_id, ex_end, ex_id, ex_end, 100, "open", now - 5000, None, now, now]],
        column_names=SEGMENT_COLUMNS,
    )  # fmt: skip
    xrp.insert(
        "gap_repairs",
        [["XRPUSDT", "1m", ex_id, "exchange_gap", 2, 2, 0, now, None, "", "r1", now, 1]],
        column_names=["symbol", "interval", "segment_id", "state", "attempts", "empty_answers", "rest_bars",
                      "last_attempt_at", "next_attempt_at", "last_error", "run_id", "updated_at", "version"],
    )  # fmt: skip
    result = queue_missing(xrp, scan(xrp, "XRPUSDT", "1m", now_ms=XRP_NOW))
    # outage 1 and the stale segment: one segment over the outage, 150 bars counted in ClickHouse
    # (adding estimates would say 150 + 101 - 50 overlap = 201)
    assert result.merged == (
        MergedSegment(OUT1.from_open_time, OUT1.to_open_time, OUT1.from_open_time, OUT1.to_open_time, 150,
                      (stale_id,)),
    )  # fmt: skip
    # outage 2: only the part the exchange gap does not cover
    assert result.opened == (MissingRange(ex_end + MIN, OUT2.to_open_time, 183),)
    assert segments(xrp) == [
        (OUT1.from_open_time, OUT1.to_open_time, OUT1.from_open_time, OUT1.to_open_time, 150, "open"),
        (stale_id, stale_end, stale_id, stale_end, 101, "merged"),
        (ex_id, ex_end, ex_id, ex_end, 100, "open"),
        (ex_end + MIN, OUT2.to_open_time, ex_end + MIN, OUT2.to_open_time, 183, "open"),
    ]
    merged = next(s for s in segment_lifecycle(xrp, "XRPUSDT", "1m") if s.segment_id == OUT1.from_open_time)
    assert merged.detected_at == now - 5000  # the earliest detection of what it replaces
    states = [s.state for s in segment_lifecycle(xrp, "XRPUSDT", "1m")]
    assert states == ["open", "merged", "exchange_gap", "open"]
    again = queue_missing(xrp, scan(xrp, "XRPUSDT", "1m", now_ms=XRP_NOW))
    assert (again.opened, again.merged, again.skipped) == ((), (), 2)


def test_scheduler_keeps_the_gauges_current(xrp: Client) -> None:
    scheduler = ContinuityScheduler(xrp, [("XRPUSDT", "1m")], every_s=0.05, clock_ms=lambda: XRP_NOW)
    reports = scheduler.scan_all()
    assert [r.scanned_days for r in reports] == [1, 30, 365]
    labels = {"symbol": "XRPUSDT", "interval": "1m"}
    assert gauge("ohlcv_completeness_ratio", **labels, window="365d") == XRP_PRESENT / XRP_EXPECTED
    assert gauge("ohlcv_missing_bars", **labels, window="365d") == 433
    assert gauge("ohlcv_completeness_ratio", **labels, window="1d") == 1.0  # the last day has no hole
    assert gauge("ohlcv_missing_bars", **labels, window="1d") == 0
    assert gauge("ohlcv_missing_bars", **labels, window="30d") == 433
    thirty = reports[1]
    ratio_30d = thirty.present_bars / thirty.expected_bars
    assert gauge("ohlcv_completeness_ratio", **labels, window="30d") == ratio_30d
    assert gauge("ohlcv_gap_open_segments", **labels) == 0
    # each cycle's results are stored, the newest per stream and window (continuity_scans)
    stored = xrp.query(
        "SELECT window, toUnixTimestamp64Milli(scanned_at), expected_bars, present_bars, missing_bars, "
        "gap_count, completeness, toUnixTimestamp64Milli(span_from) FROM continuity_scans FINAL "
        "WHERE symbol = 'XRPUSDT' AND interval = '1m' ORDER BY expected_bars"
    ).result_rows
    assert [r[0] for r in stored] == ["1d", "30d", "365d"]
    for row, r in zip(stored, reports, strict=True):
        assert row[1:] == (XRP_NOW, r.expected_bars, r.present_bars, r.missing_bars, r.gap_count,
                           r.completeness_ratio, r.span_from_ms)  # fmt: skip
    scheduler.clock_ms = lambda: XRP_NOW + 1
    scheduler.scan_all()
    assert xrp.query("SELECT count(), min(toUnixTimestamp64Milli(scanned_at)) FROM continuity_scans FINAL "
                     "WHERE symbol = 'XRPUSDT'").result_rows[0] == (3, XRP_NOW + 1)  # fmt: skip
    # queueing from the scheduler; the thread runs cycles until stopped
    queued = ContinuityScheduler(
        xrp, [("XRPUSDT", "1m")], every_s=0.05, queue_missing=True, clock_ms=lambda: XRP_NOW
    )
    queued.start()
    deadline = time.monotonic() + 20
    while queued.cycles < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    queued.stop()
    assert not queued.is_alive() and queued.cycles >= 2
    assert gauge("ohlcv_gap_open_segments", **labels) == 2
    assert [s[5] for s in segments(xrp)] == ["open", "open"]


def test_scheduled_all_window_finds_and_queues_the_2021_outages_years_later(xrp: Client) -> None:
    # the windows as the stack passes them (ohlcv.services): CONTINUITY_WINDOWS_DAYS, parsed
    windows = Settings(_env_file=None, continuity_windows_days="all,365,1").continuity_windows_days  # type: ignore[call-arg]
    scheduler = ContinuityScheduler(
        xrp, [("XRPUSDT", "1m")], every_s=0.05, windows_days=windows, queue_missing=True,
        clock_ms=lambda: YEARS_LATER,
    )  # fmt: skip
    assert scheduler.windows_days == (1, 365, "all")
    reports = scheduler.scan_all()
    assert [r.expected_bars for r in reports] == [0, 0, XRP_EXPECTED]  # 1d and 365d hold nothing now
    assert reports[-1].missing == (OUT1, OUT2)
    labels = {"symbol": "XRPUSDT", "interval": "1m"}
    assert gauge("ohlcv_completeness_ratio", **labels, window="all") == XRP_PRESENT / XRP_EXPECTED
    assert gauge("ohlcv_missing_bars", **labels, window="all") == 433
    assert gauge("ohlcv_missing_bars", **labels, window="365d") == 0
    # the longest window, "all", is the one queued: both outages, once
    assert [s[4:] for s in segments(xrp)] == [(150, "open"), (283, "open")]
    assert [s[0] for s in segments(xrp)] == [OUT1.from_open_time, OUT2.from_open_time]
    assert gauge("ohlcv_gap_open_segments", **labels) == 2
    scheduler.scan_all()
    assert len(segments(xrp)) == 2
    with pytest.raises(ValueError, match="'al'"):
        ContinuityScheduler(xrp, [], windows_days=[1, "al"])  # type: ignore[list-item]


def test_cli_scan_writes_the_original_json_and_queues(tmp_path: Path) -> None:
    """``ohlcv scan`` as a user runs it, in a subprocess with its own chDB."""
    ohlcv = Path(sys.executable).parent / "ohlcv"
    ours = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update({"DATA_DIR": str(tmp_path / "data"), "CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}",
                "SYMBOLS": "XRPUSDT", "INTERVALS": "1m", "RESAMPLE_INTERVALS": "5m"})  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ohlcv), *args], check=False, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    loaded = run("import", str(XRP_JSON), "--mode", "bulk")
    assert loaded.returncode == 0, loaded.stderr
    days = str((int(time.time() * 1000) - XRP_FIRST) // 86_400_000 + 2)  # reaches back past the dump
    out = tmp_path / "scan.json"
    done = run("scan", "--days", days, "--json", str(out), "--queue-missing")
    assert done.returncode == 0, done.stderr
    assert "XRPUSDT" in done.stdout and "99.298" in done.stdout  # 61274 / 61707 = 99.2983 %
    assert "scan" in done.stderr  # the progress bar
    reports = json.loads(out.read_text())
    assert [(r["symbol"], r["interval"]) for r in reports] == [("XRPUSDT", "1m"), ("XRPUSDT", "5m")]
    one = reports[0]
    assert one["gaps"] == [m.to_json() for m in (OUT1, OUT2)]
    assert (one["gap_count"], one["expected_bars"], one["present_bars"], one["largest_gap_bars"]) == (
        2, XRP_EXPECTED, XRP_PRESENT, 283,
    )  # fmt: skip
    assert one["scanned_days"] == int(days) and one["completeness_ratio"] == XRP_PRESENT / XRP_EXPECTED
    five = reports[1]  # built by the bulk import: 30 + 56 whole 5m buckets inside the two outages
    assert (five["present_bars"], five["gap_count"], five["missing_bars"]) == (12_255, 2, 86)
    again = run("scan", "--symbol", "xrpusdt", "--interval", "1m", "--days", days, "--queue-missing")
    assert again.returncode == 0, again.stderr
    assert "queued" in again.stdout
    bad = run("scan", "--interval", "2m")
    assert bad.returncode == 2 and "error: --interval '2m' is not a Binance interval" in bad.stderr
