"""The demo's scan window: the bundled sample is years old, and its outages must be in reach."""

from __future__ import annotations

import orjson

from ohlcv.demo import XRP_DUMP, sample_age_days
from streams.continuity import DAY_MS


def test_the_longest_demo_window_reaches_the_sample_s_first_candle() -> None:
    first = int(orjson.loads(XRP_DUMP.read_bytes())[0][0])
    for now in (first + DAY_MS, first + 5 * 365 * DAY_MS + 12_345):
        days = sample_age_days(now)
        assert now - days * DAY_MS < first < now - (days - 3) * DAY_MS
