"""The demo's scan window: the bundled sample is years old, and its outages must be in reach."""

from __future__ import annotations

from fakes.binance import Datasets
from ohlcv.demo import DATA, days_reaching
from streams.continuity import DAY_MS


def test_the_longest_demo_window_reaches_the_sample_s_first_candle() -> None:
    first = min(series.open_times[0] for series in Datasets.from_data_dir(DATA) if len(series))
    assert first == 1617321600000  # the XRP/USDT dump's first candle, 2021-04-02
    for now in (first + DAY_MS, first + 5 * 365 * DAY_MS + 12_345):
        days = days_reaching(first, now)
        assert now - days * DAY_MS < first < now - (days - 3) * DAY_MS
