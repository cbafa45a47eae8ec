"""``ohlcv demo`` (what ``make demo`` runs) as a user runs it, on its own embedded broker and
chDB: the bundled real sample goes through every stage, and the API serves it.

Checked through the API: the bulk-loaded history has feature rows (the demo's feature rebuild)
and a drift report; the live XRP/USDT day reaches the candle table and the features topology,
whose rows continue from the rebuilt ones: its first live rows and its newest row (after the
withheld minutes are repaired) equal the independent batch reference over the whole real dump.

Checked through the console (``api/console``) in Debian's headless Chromium, driven by
Playwright, on the same running demo: the chart watches the live day (partial updates moving
the last bar, the withheld minutes appearing as an open gap and turning repaired), then shows
the stored candles, moves when the test produces a partial update onto Kafka, and every view
shows the API's numbers, with no console error. Screenshots: ``test-output/screenshots``."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from indicators.batch import features
from indicators.definitions import FEATURE_NAMES, ROW_FLAGS
from ohlcv.infra.broker import free_port
from ohlcv.infra.process import stop_process
from tests.indicators.helpers import frame
from tests.topologies.helpers import vision_candles, xrp_candles

OHLCV = Path(sys.executable).parent / "ohlcv"
KEY = {"X-API-Key": "demo-key"}


def _get(api: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{api}{path}", params=params, headers=KEY, timeout=10)


def _matches(row: dict[str, Any], ref: dict[str, Any]) -> bool:
    for name in FEATURE_NAMES:
        a, b = row[name], ref[name]
        if (a is None) != (isinstance(b, float) and math.isnan(b)):
            return False
        if a is not None and not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            return False
    return all(row[f] == ref[f] for f in ROW_FLAGS)


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    api: str
    data_dir: Path
    lines: list[str] = field(default_factory=list)

    def wait_line(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "the demo stopped:\n" + "".join(self.lines[-40:])
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "".join(self.lines[-40:])
            time.sleep(0.2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """``ohlcv demo`` as a user starts it, once for the module; its live day starts 20 s after
    the history is ready (DEMO_LIVE_DELAY), so the console can watch it from the first minute."""
    tmp = tmp_path_factory.mktemp("demo")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CLICKHOUSE_", "SYMBOL"))}
    env.update({"DATA_DIR": str(tmp / "d"), "API_PORT": str(port), "API_KEY": KEY["X-API-Key"],
                "DEMO_SPEED": "6000", "DEMO_LIVE_DELAY": "20",
                "CALIBRATION_MONITOR_INTERVAL": "5"})  # fmt: skip
    proc = subprocess.Popen([str(OHLCV), "demo"], env=env, cwd=tmp, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    d = Demo(proc, f"http://127.0.0.1:{port}", tmp / "d")

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            d.lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield d
    finally:
        stop_process(proc, signal.SIGINT, 30)
        reader.join(10)


def test_the_console_watches_the_live_day_a_gap_open_and_then_repaired(demo: Demo) -> None:
    from tests.ohlcv.console import open_console

    demo.wait_line("live        replaying", 240)
    with open_console(demo.api, KEY["X-API-Key"]) as c:
        c.goto("#/candles/XRPUSDT/1m")
        c.wait("window.ohlcvConsole.view.socket.current === 'live'")
        before = c.eval("window.ohlcvConsole.view.lastBar()")
        split = xrp_candles()[-1].open_time - 86_400_000
        withheld = split + 10 * 60_000  # the demo's five withheld minutes: one gap segment
        c.wait(
            f"window.ohlcvConsole.view.gapLog().filter(g => g.id === {withheld}).map(g => g.state).join() "
            "=== 'open,repaired'",
            timeout_s=120,
        )
        counts = c.eval("window.ohlcvConsole.view.counts()")
        assert counts.get("partial_update", 0) > 10 and counts.get("append", 0) > 10, counts
        c.wait(f"window.ohlcvConsole.view.lastBar().time > {before['time'] if before else 0}")
        # the repaired minutes are on the chart as candles, under a repaired band
        assert c.eval(f"window.ohlcvConsole.view.bar({withheld + 2 * 60_000}) !== null")
        assert c.eval("window.ohlcvConsole.view.overlayPoints()") >= 5
        c.shot("candles-live")
        assert c.errors == [], c.errors


def test_the_demo_serves_the_sample_through_every_stage(demo: Demo) -> None:
    api, proc = demo.api, demo.proc
    xrp = xrp_candles()
    batch = features(frame(xrp), 60_000)
    ref = batch.iloc[-1].to_dict()
    split = xrp[-1].open_time - 86_400_000  # the demo's live day starts after it (ohlcv.demo)
    link = vision_candles("LINKUSDT")
    deadline = time.monotonic() + 240
    newest: dict[str, Any] = {}
    while not newest or newest["open_time"] != xrp[-1].open_time or not _matches(newest, ref):
        assert proc.poll() is None, "the demo stopped"
        assert time.monotonic() < deadline, f"the live day's last feature row: {newest}"
        time.sleep(1)
        try:
            r = _get(api, "/api/features/latest", symbol="XRPUSDT", interval="1m")
        except httpx.TransportError:
            continue
        if r.status_code == 200:
            newest = r.json()
    assert newest["window_complete"] and newest["event_seq"] > 0  # from the stream, not the rebuild
    # the first live rows (before the withheld minutes) continue the history's rebuilt rows:
    # a state seeded from nothing would have no returns and a fresh EMA at the first one
    first = _get(api, "/api/features/history", symbol="XRPUSDT", interval="1m", after_open_time=split,
                 limit=9).json()["rows"]  # fmt: skip
    assert [x["open_time"] for x in first] == [split + k * 60_000 for k in range(1, 10)]
    for x in first:
        expected = batch[batch["open_time"] == x["open_time"]].iloc[0].to_dict()
        assert _matches(x, expected) and x["reason"] == "new", (x, expected)
    # the history's rows come from the rebuild: the newest LINKUSDT row is its last candle's
    r = _get(api, "/api/features/latest", symbol="LINKUSDT", interval="1m")
    assert r.status_code == 200, r.text
    assert (r.json()["open_time"], r.json()["reason"]) == (link[-1].open_time, "rebuild")
    drift = _get(api, "/api/features/drift", symbol="LINKUSDT", interval="1m", window=200)
    assert drift.status_code == 200 and drift.json()["status"] in ("ok", "drift"), drift.text
    recent = _get(api, "/api/ohlcv/recent", symbol="XRPUSDT", interval="1m", limit=1).json()
    assert recent["candles"][-1]["open_time"] == xrp[-1].open_time
    # a first model per 1m stream was trained at start and is production: the live day's
    # feature rows are scored by it, to the newest candle
    summary = _get(api, "/api/models/summary", symbol="XRPUSDT", interval="1m").json()
    prod = summary["production"]
    assert prod is not None and prod["trigger"] == "schedule", summary
    deadline = time.monotonic() + 30
    while True:
        score = _get(api, "/api/inference/latest", symbol="XRPUSDT", interval="1m")
        if score.status_code == 200 and score.json()["open_time"] == xrp[-1].open_time:
            break
        assert time.monotonic() < deadline, score.text
        time.sleep(0.5)
    s = score.json()
    assert s["model_id"] == prod["model_id"] and s["event_seq"] > 0 and 0 < s["probability"] < 1
    # the live day's first 100 minutes: the withheld minutes 10..14 were repaired, so the rows
    # whose window holds them are scored as repaired-window scores, counted apart
    # (the re-scores after the repair may still be on their way when the newest score is in)
    deadline = time.monotonic() + 60
    while True:
        hist = _get(api, "/api/inference/history", symbol="XRPUSDT", interval="1m", limit=100,
                    before_open_time=split + 101 * 60_000).json()  # fmt: skip
        if (hist["repaired"] >= 50 and hist["incomplete"] == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [r["open_time"] for r in hist["rows"]] == [split + k * 60_000 for k in range(1, 101)]
    assert hist["repaired"] >= 50 and hist["incomplete"] == 0, hist
    # the model monitor: live calibration of the live day's realized scores, both Evidently
    # reports, and an auto-retrain decision
    deadline = time.monotonic() + 120
    while True:
        live = _get(api, "/api/inference/calibration/live", symbol="XRPUSDT", interval="1m").json()
        kinds = {r["kind"] for r in _get(api, "/api/reports", symbol="XRPUSDT", interval="1m").json()}
        decisions = _get(api, "/api/training/retrain/events", symbol="XRPUSDT", interval="1m").json()
        if (
            live.get("checks")
            and live["rows"] >= 500
            and kinds == {"data_drift", "classification"}
            and decisions
        ):
            break
        assert proc.poll() is None and time.monotonic() < deadline, (live, kinds, decisions)
        time.sleep(1)
    assert live["status"] in ("ok", "breach") and live["live"]["ece"] is not None
    assert decisions[-1]["decision"] in ("no_trigger", "locked", "kept", "promoted", "failed"), decisions
    assert decisions[-1]["decision"] != "failed", decisions[-1]
    # news: the fake feeds' stories, deduplicated across the two sources
    deadline = time.monotonic() + 60
    while True:
        news = _get(api, "/api/news/recent").json()
        if news.get("count", 0) >= 3:
            break
        assert time.monotonic() < deadline, news
        time.sleep(1)
    assert {a["source"] for a in news["articles"]} == {"coindesk"}
    sources = {x["source"]: x for x in _get(api, "/api/news/sources").json()}
    assert set(sources) == {"coindesk", "mirror"} and sources["mirror"]["dedup_last_ratio"] == 0.0
    # risk: the scored stream's simulated book, the feature rows' news columns
    books = _get(api, "/api/risk/state").json()["books"]
    assert [(b["symbol"], b["interval"]) for b in books] == [("XRPUSDT", "1m")] and books[0]["equity"] > 0
    activity = _get(api, "/api/inference/activity/summary").json()
    assert activity["decisions_5m"] > 0 and activity["status"] in ("warming", "active")
    latest = _get(api, "/api/features/latest", symbol="XRPUSDT", interval="1m").json()
    assert "news_stalled" in str(latest)  # the sample's bars are years before any story: stalled
    metrics = httpx.get(f"{api}/metrics", timeout=10).text
    for name in (
        "inference_live_ece{",
        "inference_live_ece_delta{",
        "calibration_retrain_recommendation{",
        "auto_retrain_checks_total",
        "auto_retrain_triggered_total",
        "inference_scores_total",
        "risk_decisions_total",
    ):
        assert name in metrics, name
    out = "".join(demo.lines)
    assert "feature rows derived for the history (ohlcv features rebuild)" in out, out[-3000:]
    assert "model       XRPUSDT-1m-v1-" in out and "trained in" in out, out[-3000:]


def test_every_console_view_shows_the_apis_numbers(demo: Demo) -> None:
    from tests.ohlcv.console import check_views

    check_views(demo.api, KEY["X-API-Key"], demo.data_dir)


def test_the_demo_stops_on_ctrl_c(demo: Demo) -> None:
    stop_process(demo.proc, signal.SIGINT, 30)
    assert demo.proc.returncode in (0, 130), "".join(demo.lines[-60:])
