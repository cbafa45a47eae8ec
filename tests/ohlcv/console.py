"""The console (``api/console``) in Debian's headless Chromium through Playwright, against a
running stack: ``open_console`` gives a page with the API key saved, that collects every console
error; ``check_views`` walks every view of a loaded demo and holds what it renders to what the
API answers."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Producer

from schemas.klines import Candle
from schemas.topics import RAW_KLINES
from streams.replay import kline_record
from tests.browser import playwright_chromium, screenshot_dir
from tests.topologies.helpers import vision_candles, xrp_candles


class Console:
    def __init__(self, page: Any, api: str):
        self.page, self.api = page, api
        self.errors: list[str] = []
        self.contrast: dict[str, Any] = {"ratio": 99.0}

    def goto(self, route: str) -> None:
        """Open a view (``#/name/...``) and wait until it has loaded."""
        name = route.split("/")[1]
        if self.page.url.startswith(self.api):
            self.page.evaluate(f"location.hash = {json.dumps(route)}")
        else:
            self.page.goto(f"{self.api}/{route}")
        self.wait(f"window.ohlcvConsole && window.ohlcvConsole.ready === {json.dumps(name)}")

    def wait(self, expr: str, timeout_s: float = 60) -> None:
        self.page.wait_for_function(expr, timeout=timeout_s * 1000, polling=100)

    def eval(self, expr: str) -> Any:
        return self.page.evaluate(expr)

    def text(self, selector: str) -> str:
        return str(self.page.inner_text(selector)).strip()

    def shot(self, name: str) -> Path:
        """A screenshot of the view, and its worst text contrast (``contrast``) on the way."""
        path = screenshot_dir() / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        worst = self.eval(CONTRAST_JS)
        if worst["ratio"] < self.contrast["ratio"]:
            self.contrast = {**worst, "view": name}
        return path


@contextlib.contextmanager
def open_console(api: str, key: str, *, width: int = 1280, height: int = 800) -> Iterator[Console]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = playwright_chromium(pw)
        try:
            ctx = browser.new_context(viewport={"width": width, "height": height})
            ctx.add_init_script(f"localStorage.setItem('ohlcv.apiKey', {json.dumps(key)})")
            page = ctx.new_page()
            c = Console(page, api)
            page.on("console", lambda m: c.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: c.errors.append(str(e)))
            yield c
        finally:
            browser.close()


def _either(read: Callable[[], Any], shown: Callable[[], str], fmt: Callable[[Any], str]) -> None:
    """What the page shows equals the API's answer read just before or just after it (the demo
    keeps moving: new stories, monitor rounds)."""
    before = fmt(read())
    seen = shown()
    after = fmt(read())
    assert seen in (before, after), (seen, before, after)


def _produce_kline(broker: str, c: Candle) -> None:
    key, value = kline_record(c, source="ws", market="spot", received_at=int(time.time() * 1000))
    p = Producer({"bootstrap.servers": broker})
    p.produce(RAW_KLINES.name, key=key, value=value)
    assert p.flush(30) == 0


CONTRAST_JS = (Path(__file__).parent / "contrast.js").read_text()


def check_views(api: str, key: str, data_dir: Path) -> None:
    h = {"X-API-Key": key}

    def get(path: str, **params: Any) -> Any:
        r = httpx.get(f"{api}{path}", params=params, headers=h, timeout=30)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    broker = json.loads((data_dir / "run" / "stack.json").read_text())["broker_address"]
    xrp = xrp_candles()
    last = xrp[-1]
    with open_console(api, key) as c:
        # candles: the stored ones, then a partial update produced onto Kafka moves the last bar
        c.goto("#/candles/XRPUSDT/1m")
        c.wait("window.ohlcvConsole.view.socket.current === 'live' && window.ohlcvConsole.view.bars() > 0")
        stored = get("/api/ohlcv/recent", symbol="XRPUSDT", interval="1m", limit=500)["candles"]
        shown = c.eval("[...Array(0)].concat(window.ohlcvConsole.view.lastBar())")[0]
        assert c.eval("window.ohlcvConsole.view.bars()") == len(stored) == 500
        assert (
            shown["time"] * 1000 == stored[-1]["open_time"] == last.open_time and shown["close"] == last.close
        )
        for cd in stored[::50]:
            b = c.eval(f"window.ohlcvConsole.view.bar({cd['open_time']})")
            assert (b["open"], b["high"], b["low"], b["close"]) == (
                cd["open"],
                cd["high"],
                cd["low"],
                cd["close"],
            )
        t = last.open_time + 60_000
        moving = Candle("XRPUSDT", "1m", t, t + 59_999, last.close, last.close, last.close, last.close, 1.0,
                        None, None, None, None, False, "ws", event_time=t + 1_000)  # fmt: skip
        _produce_kline(broker, moving)
        c.wait(f"window.ohlcvConsole.view.lastBar().time === {t / 1000}")
        up = round(last.close * 1.004, 4)
        _produce_kline(broker, replace(moving, high=up, close=up, volume=2.0, event_time=t + 2_000))
        c.wait(f"window.ohlcvConsole.view.lastBar().close === {up}")
        assert "live" in c.text("#conn")
        # a revised close of a stored bar behind the last: a repair, redrawn in place
        old = stored[-10]
        revised = old["high"] if old["high"] != old["close"] else old["low"]
        ot = old["open_time"]
        fix = Candle("XRPUSDT", "1m", ot, ot + 59_999, old["open"], old["high"], old["low"], revised,
                     old["volume"], None, None, None, None, True, "ws", event_time=ot + 60_000)  # fmt: skip
        _produce_kline(broker, fix)
        c.wait(f"window.ohlcvConsole.view.bar({ot}).close === {revised}")
        assert c.eval("window.ohlcvConsole.view.counts().repair") == 1
        assert c.eval("window.ohlcvConsole.view.lastBar().time") == t / 1000  # the last bar stays the last
        # a dropped connection resumes with since_seq, without a reload: the missed update arrives
        bars = c.eval("window.ohlcvConsole.view.bars()")
        c.eval("window.ohlcvConsole.view.socket.drop()")
        down = round(last.close * 0.997, 4)
        _produce_kline(broker, replace(moving, low=down, close=down, volume=3.0, event_time=t + 3_000))
        c.wait("window.ohlcvConsole.view.socket.resumes === 1")
        c.wait("window.ohlcvConsole.view.socket.current === 'live'")
        c.wait(f"window.ohlcvConsole.view.lastBar().close === {down}")
        assert c.eval("window.ohlcvConsole.view.bars()") == bars
        assert c.eval("window.ohlcvConsole.view.counts().snapshot") == 1  # resumed, not re-snapshotted
        # another stream from the picker: its own stored candles
        link = vision_candles("LINKUSDT")
        c.page.select_option("#stream", "LINKUSDT/1m")
        c.wait(f"window.ohlcvConsole.view.lastBar()?.time === {link[-1].open_time / 1000}")
        assert c.eval("window.ohlcvConsole.view.lastBar()")["close"] == link[-1].close
        assert c.eval("window.ohlcvConsole.view.bars()") == 500 and "LINKUSDT/1m" in c.page.url
        c.shot("candles")

        # continuity: the stored span's completeness of each stream, as the API scans it
        c.goto("#/continuity")
        c.wait("document.querySelector('#completeness') !== null", timeout_s=120)
        for row in c.eval(
            "[...document.querySelectorAll('#completeness tbody tr')]"
            ".map(r => [...r.cells].map(x => x.innerText))"
        ):
            sym, iv = row[0].split()
            span = get("/api/ohlcv/continuity", symbol=sym, interval=iv)
            ratio = span["completeness_ratio"]
            assert row[-4] == ("–" if ratio is None else f"{100 * ratio:,.3f} %"), (row, span)
            assert row[-3] == f"{span['gap_count']:,}", (row, span)
        # the last scheduled scan, as the stack stored it
        shown_scans = c.eval(
            "[...document.querySelectorAll('#last-scans tbody tr')]"
            ".map(r => [...r.cells].map(x => x.innerText))"
        )
        scans = get("/api/ohlcv/continuity/scans")["scans"]
        assert len(shown_scans) == len(scans) > 0
        by = {(x["symbol"], x["interval"], x["window"]): x for x in scans}
        for row in shown_scans:
            sym, iv = row[0].split()
            x = by[(sym, iv, row[1])]
            if x["completeness"] is None:
                assert row[2] == "–", (row, x)
            else:  # a window ending now loses a bar a minute: a cycle between the reads may move it
                assert abs(float(row[2].rstrip(" %").replace(",", "")) - 100 * x["completeness"]) < 0.01, (
                    row,
                    x,
                )
        c.shot("continuity")

        # features and models: live calibration as the API computes it
        c.goto("#/models/XRPUSDT/1m")
        c.wait("document.querySelector('#live-ece') !== null")
        live = "/api/inference/calibration/live"
        _either(lambda: get(live, symbol="XRPUSDT", interval="1m")["live"]["ece"],
                lambda: c.text("#live-ece b"), lambda v: f"{v:,.4f}")  # fmt: skip
        summary = get("/api/models/summary", symbol="XRPUSDT", interval="1m")
        assert summary["production"]["model_id"] in c.text("#models-summary")
        c.page.fill("#pg-threshold", "0.5")
        c.page.click("#models-playground button[type=submit]")
        c.wait("document.querySelector('#playground-result .kpis') !== null")
        c.shot("models")

        # risk: the account and the books
        c.goto("#/risk")
        st = get("/api/risk/state")
        assert c.text("#account-equity b") == f"{st['equity']:,.2f}"
        assert c.eval("document.querySelectorAll('#books-table tbody tr').length") == len(st["books"]) >= 1
        _either(
            lambda: get("/api/inference/activity/summary")["status"],
            lambda: c.text("#activity-status b"),
            str,
        )
        curve = get("/api/risk/equity", symbol=st["books"][0]["symbol"], interval=st["books"][0]["interval"],
                    limit=100_000)["points"]  # fmt: skip
        assert c.eval("window.ohlcvConsole.view.curvePoints()") == len(curve) > 0
        c.shot("risk")

        # news: the summary window's count and each source's health score
        c.goto("#/news")
        _either(lambda: get("/api/news/summary", window_minutes=60)["total"], lambda: c.text("#news-total b"),
                lambda v: f"{v:,}")  # fmt: skip
        sources = {s["source"]: s for s in get("/api/news/sources")}
        rows = c.eval(
            "[...document.querySelectorAll('#sources-table tbody tr')].map(r => r.cells[0].innerText)"
        )
        assert sorted(rows) == sorted(sources)
        # the demo adds a story naming bitcoin every 30 s: the count read just before or just after
        c.page.fill("#news-q", "bitcoin")

        def search() -> str:
            c.page.click("form[role=search] button")
            c.wait("document.querySelector('#news-search-total') !== null")
            return c.text("#news-search-total")

        _either(lambda: get("/api/news/search", q="bitcoin", days=3650, limit=50)["total"], search,
                lambda v: f"{v} match(es)")  # fmt: skip
        c.shot("news")

        # readable contrast: the text of every view, against the background it is drawn on, at
        # WCAG AA (4.5:1)
        assert c.contrast["ratio"] >= 4.5, c.contrast

        # the keyboard: on a fresh load Tab reaches the skip link, then the views' links; Enter
        # on one opens its view and moves the focus to its content
        c.page.reload()
        c.wait("window.ohlcvConsole && window.ohlcvConsole.ready === 'news'")
        c.page.keyboard.press("Tab")
        assert c.eval("document.activeElement.className") == "skip"
        for _ in range(4):  # Candles, Continuity, Features & models, Risk
            c.page.keyboard.press("Tab")
        assert c.eval("document.activeElement.dataset.view") == "risk"
        c.page.keyboard.press("Enter")
        c.wait("window.ohlcvConsole.ready === 'risk'")
        assert c.eval("document.activeElement.id") == "main"
        assert c.errors == [], c.errors

    # a phone's width: nothing wider than the screen, the chart still drawn
    with open_console(api, key, width=390, height=844) as phone:
        phone.goto("#/candles/XRPUSDT/1m")
        phone.wait("window.ohlcvConsole.view.bars() > 0")
        assert phone.eval("document.documentElement.scrollWidth") <= 390
        phone.shot("candles-phone")
        assert phone.errors == [], phone.errors

    # a wrong key: the failed call shows a toast with its request id and the key is asked again;
    # once the right one is saved, the view loads
    with open_console(api, "wrong-key") as bad:
        bad.page.goto(f"{api}/#/risk")
        bad.wait("document.querySelector('.toast') !== null && document.getElementById('key-dialog').open")
        toast = bad.text(".toast")
        assert "403" in toast and re.search(r"request [0-9a-f-]{8,}", toast), toast
        bad.page.fill("#key-input", key)
        bad.page.click("#key-form button[type=submit]")
        bad.wait("window.ohlcvConsole.ready === 'risk'")
        assert bad.eval("localStorage.getItem('ohlcv.apiKey')") == key
