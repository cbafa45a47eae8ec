"""BinanceRestClient against the fake Binance, with the real Vision month and the real XRP dump.

Expected rows are read from the data files independently of the fake's loaders.
"""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from fakes.binance import (
    Datasets,
    FakeBinance,
    KlineSeries,
    RestFault,
    load_freqtrade_json,
    load_vision_zip,
)
from schemas.klines import Candle
from streams.binance_rest import BinanceBannedError, BinanceRestClient, BinanceRestError
from tests.conftest import DATA

AVAX_ZIP = DATA / "binance-vision" / "futures-um" / "1m" / "AVAXUSDT-1m-2026-02.zip"
XRP_JSON = DATA / "freqtrade" / "binance" / "XRP_USDT-1m.json"
MIN = 60_000
XRP_OUTAGES = [(1618883940000 + MIN, 1618893000000 - MIN), (1619323260000 + MIN, 1619340300000 - MIN)]


def values(c: Candle) -> tuple[Any, ...]:
    return (
        c.open_time, c.close_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades,
        c.taker_buy_base, c.taker_buy_quote,
    )  # fmt: skip


@pytest.fixture(scope="module")
def vision_rows() -> list[tuple[Any, ...]]:
    """The AVAX month as parsed straight from the Vision CSV."""
    with zipfile.ZipFile(AVAX_ZIP) as zf:
        text = zf.read(zf.namelist()[0]).decode()
    return [
        (int(r[0]), int(r[6]), *map(float, r[1:6]), float(r[7]), int(r[8]), float(r[9]), float(r[10]))
        for r in csv.reader(io.StringIO(text))
        if r and r[0] != "open_time"
    ]


@pytest.fixture(scope="module")
def xrp_rows() -> list[list[float]]:
    return list(json.loads(XRP_JSON.read_text()))


@pytest.fixture(scope="module")
def datasets() -> Datasets:
    return Datasets([load_vision_zip(AVAX_ZIP), load_freqtrade_json(XRP_JSON)])


@pytest.fixture
def fake(datasets: Datasets) -> Iterator[FakeBinance]:
    with FakeBinance(datasets) as f:
        yield f


def client(fake: FakeBinance, market: str = "usdm", **kw: Any) -> BinanceRestClient:
    kw.setdefault("backoff_initial_s", 0.05)
    return BinanceRestClient(fake.urls.rest(market), market, **kw)  # type: ignore[arg-type]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_paging_returns_exactly_the_rows_of_the_vision_month(
    fake: FakeBinance, vision_rows: list[tuple[Any, ...]]
) -> None:
    want = vision_rows[1000:4700]  # 3700 rows: pages of 1500, 1500, 700
    with client(fake) as c:
        got = c.klines("AVAXUSDT", "1m", want[0][0], want[-1][0])
    assert [values(x) for x in got] == want
    assert {(x.symbol, x.interval, x.source, x.is_closed) for x in got} == {("AVAXUSDT", "1m", "rest", True)}
    assert all(x.event_time == x.close_time for x in got)
    log = fake.rest_requests
    assert [int(r.params["startTime"]) for r in log] == [want[0][0], want[1500][0], want[3000][0]]
    assert {r.params["limit"] for r in log} == {"1500"} and [r.rows for r in log] == [1500, 1500, 700]
    assert [r.weight for r in log] == [10, 10, 10]  # futures: limit 1500 weighs 10
    assert c.stats.requests == 3 and c.stats.retries == 0
    assert c.stats.weight_used == log[-1].used_weight  # read from X-MBX-USED-WEIGHT-1M


def test_spot_pages_at_1000_and_the_xrp_outages_come_back_missing(
    fake: FakeBinance, xrp_rows: list[list[float]]
) -> None:
    start, end = 1618790400000, 1619395200000 - MIN  # 2021-04-19 .. 2021-04-25, both outages inside
    want = [r for r in xrp_rows if start <= r[0] <= end]
    with client(fake, "spot") as c:
        got = c.klines("XRPUSDT", "1m", start, end)
    assert [(x.open_time, x.open, x.high, x.low, x.close, x.volume) for x in got] == [tuple(r) for r in want]
    assert len(got) == 10080 - 150 - 283
    for a, b in XRP_OUTAGES:
        assert not [x for x in got if a <= x.open_time <= b]
    # the dump has no quote volume or trades; the fake serves the protocol's "0" (documented)
    assert {(x.quote_volume, x.trades) for x in got} == {(0.0, 0)}
    log = fake.rest_requests
    assert {r.params["limit"] for r in log} == {"1000"} and {r.weight for r in log} == {2}
    assert c.stats.requests == len(log) == 10  # 9647 rows


def test_429_and_418_slow_the_client_down_and_it_still_returns_everything(
    fake: FakeBinance, vision_rows: list[tuple[Any, ...]]
) -> None:
    want = vision_rows[:3100]
    before_429 = metric("binance_rest_rate_limited_total", market="usdm")
    before_418 = metric("binance_rest_banned_total", market="usdm")
    fake.push_rest_fault(RestFault.too_many_requests(retry_after_s=1), RestFault.banned(retry_after_s=1))
    with client(fake) as c:
        got = c.klines("AVAXUSDT", "1m", want[0][0], want[-1][0])
    assert [values(x) for x in got] == want
    assert (c.stats.rate_limited, c.stats.banned, c.stats.retries) == (1, 1, 2)
    assert c.stats.backoff_s >= 2.0  # both Retry-After waits, nothing shorter
    log = fake.rest_requests
    # had the client asked again inside a Retry-After, the fake would have answered more 418s
    assert [r.status for r in log] == [429, 418, 200, 200, 200]
    assert log[1].at - log[0].at >= 1.0 and log[2].at - log[1].at >= 1.0
    assert metric("binance_rest_rate_limited_total", market="usdm") == before_429 + 1
    assert metric("binance_rest_banned_total", market="usdm") == before_418 + 1


def test_client_slows_down_before_the_weight_limit(
    datasets: Datasets, vision_rows: list[tuple[Any, ...]]
) -> None:
    want = vision_rows[:5000]  # 4 pages of weight 10 against a budget of 15 per 1 s window
    with FakeBinance(datasets, weight_limit={"spot": 6000, "usdm": 15}, weight_window_s=1.0) as fake:
        with client(fake, weight_limit=15, weight_window_s=1.0, weight_headroom=1.0) as c:
            got = c.klines("AVAXUSDT", "1m", want[0][0], want[-1][0])
        log = fake.rest_requests
    assert [values(x) for x in got] == want
    assert [r.status for r in log] == [200] * 4  # never a 429
    assert all(r.used_weight <= 15 for r in log)
    # two quick requests would exceed 15; at most one window boundary can fall between them
    assert c.stats.weight_waits >= 2 and c.stats.rate_limited == 0
    assert 0 < c.stats.backoff_s <= 4 * 1.1


def test_5xx_and_timeouts_are_retried_with_backoff(
    fake: FakeBinance, vision_rows: list[tuple[Any, ...]]
) -> None:
    want = vision_rows[:2000]
    fake.push_rest_fault(RestFault.server_error(503), RestFault.server_error(500), RestFault.slow(1.0))
    with client(fake, timeout_s=0.3) as c:
        got = c.klines("AVAXUSDT", "1m", want[0][0], want[-1][0])
    assert [values(x) for x in got] == want
    assert (c.stats.server_errors, c.stats.transport_errors, c.stats.retries) == (2, 1, 3)
    assert c.stats.backoff_s > 0
    fake.wait_for(lambda f: len(f.rest_requests) == 5, 3.0, "the slow answer")  # logged when sent
    statuses = [r.status for r in fake.rest_requests]
    assert statuses[:2] == [503, 500] and statuses.count(200) == 3  # the slow one came too late


def test_gives_up_after_max_retries_naming_the_request(fake: FakeBinance) -> None:
    fake.push_rest_fault(*[RestFault.server_error(502)] * 3)
    with (
        client(fake, max_retries=2) as c,
        pytest.raises(BinanceRestError, match=r"/fapi/v1/klines .*AVAXUSDT.*502"),
    ):
        c.klines("AVAXUSDT", "1m", 1769904000000, 1769904000000 + 10 * MIN)
    assert (c.stats.requests, c.stats.retries) == (3, 2)


def test_client_errors_are_not_retried(fake: FakeBinance) -> None:
    with client(fake) as c, pytest.raises(BinanceRestError, match="Invalid symbol"):
        c.klines("DOGEUSDT", "1m", 1769904000000, 1769904000000 + MIN)
    assert (c.stats.requests, c.stats.retries) == (1, 0)


def test_a_long_ban_is_raised_not_slept(fake: FakeBinance) -> None:
    fake.push_rest_fault(RestFault.banned(retry_after_s=600))
    t = time.monotonic()
    with client(fake, max_ban_wait_s=60) as c, pytest.raises(BinanceBannedError) as exc:
        c.klines("AVAXUSDT", "1m", 1769904000000, 1769904000000 + MIN)
    assert exc.value.retry_after_s == 600 and "banned" in str(exc.value)
    assert time.monotonic() - t < 5 and c.stats.banned == 1


def test_only_closed_candles_are_returned(datasets: Datasets) -> None:
    avax: KlineSeries = datasets.get("usdm", "AVAXUSDT", "1m")  # type: ignore[assignment]
    now = int(time.time() * 1000)
    offset = now // MIN * MIN - avax.open_times[1000]  # candle 1000 is the current one
    with FakeBinance(datasets, time_offset_ms=offset) as fake, client(fake) as c:
        got = c.klines("AVAXUSDT", "1m", avax.open_times[990] + offset)
        served = fake.rest_requests[-1].rows
    assert served == 11  # Binance serves the current candle too
    assert [x.open_time - offset for x in got] == list(avax.open_times[990:1000])
    assert c.stats.dropped_open == 1 and all(x.close_time < now + 1000 for x in got)
