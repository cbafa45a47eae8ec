"""What the raw-kline parser refuses: each bad case mixed into real candles, as a single kline
and as one row of a batch (refused alone, its neighbours pass), with a reason naming the field
and the value."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.intervals import bucket_start
from schemas.klines import (
    Candle,
    MalformedKlineError,
    _accepted_single,
    candle_from_raw,
    candles_from_raw,
    checked_single,
    raw_batch,
    raw_from_candle,
)
from tests.topologies.helpers import vision_candles

#: a websocket kline field -> its index in a Binance REST row
ROW_INDEX = {"t": 0, "o": 1, "h": 2, "l": 3, "c": 4, "v": 5, "T": 6, "q": 7, "n": 8, "V": 9, "Q": 10}

Bad = Callable[[Candle], dict[str, Any]]

#: (case, the fields it changes given the real candle, reason of the single kline, of the row)
BAD_CASES: list[tuple[str, Bad, str, str]] = [
    ("high below low", lambda c: {"h": repr(c.low / 2)}, "high=", "high="),
    ("open above high", lambda c: {"o": repr(c.high * 2)}, "open=", "open="),
    ("close below low", lambda c: {"c": repr(c.low / 2)}, "close=", "close="),
    ("negative volume", lambda c: {"v": "-1.5"}, "k.v='-1.5'", "volume='-1.5'"),
    ("negative price", lambda c: {"l": repr(-c.low)}, "k.l='-", "low='-"),
    ("negative quote volume", lambda c: {"q": "-2"}, "k.q='-2'", "quote_volume='-2'"),
    ("negative taker base", lambda c: {"V": "-0.1"}, "k.V='-0.1'", "taker_buy_base='-0.1'"),
    ("negative taker quote", lambda c: {"Q": "-7"}, "k.Q='-7'", "taker_buy_quote='-7'"),
    ("NaN close", lambda c: {"c": "NaN"}, "k.c='NaN'", "close='NaN'"),
    ("infinite high", lambda c: {"h": "Infinity"}, "k.h='Infinity'", "high='Infinity'"),
    ("NaN volume", lambda c: {"v": "nan"}, "k.v='nan'", "volume='nan'"),
    (
        "open time off the minute",
        lambda c: {"t": c.open_time + 1_000, "T": c.close_time + 1_000},
        "not aligned to 1m",
        "not aligned to 1m",
    ),
    ("close time one ms short", lambda c: {"T": c.close_time - 1}, "close time k.T=", "close time"),
    (
        "close time of another interval",
        lambda c: {"T": c.open_time + 299_999},
        "close time k.T=",
        "close time",
    ),
    ("negative trades", lambda c: {"n": -1}, "k.n (trades)=-1", "trades=-1"),
]


def _single(c: Candle, changes: dict[str, Any]) -> dict[str, Any]:
    raw = raw_from_candle(c, source="ws", received_at=0)
    raw["event"]["k"].update(changes)
    return raw


@pytest.mark.parametrize(("case", "bad", "reason", "_row_reason"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_a_bad_single_kline_is_refused_with_the_field_and_value(
    case: str, bad: Bad, reason: str, _row_reason: str
) -> None:
    candles = vision_candles("LINKUSDT")[:50]
    for c in candles:  # the real candles around it pass
        assert candles_from_raw(_single(c, {})) == ([replace(c, source="ws")], [])
    with pytest.raises(MalformedKlineError) as exc:
        candles_from_raw(_single(candles[20], bad(candles[20])))
    assert reason in str(exc.value), str(exc.value)


@pytest.mark.parametrize(("case", "bad", "_reason", "reason"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_a_bad_batch_row_is_refused_alone_with_the_field_and_value(
    case: str, bad: Bad, _reason: str, reason: str
) -> None:
    candles = list(vision_candles("LINKUSDT")[:50])
    value = raw_batch(candles, source="rest", received_at=0)
    for field, v in bad(candles[20]).items():
        value["klines"][20][ROW_INDEX[field]] = v
    good, refused = candles_from_raw(value)
    assert [(i, reason in r) for i, r in refused] == [(20, True)], refused
    assert refused[0][1].startswith("klines[20]")
    assert good == [replace(c, source="rest") for c in candles[:20] + candles[21:]]


def test_every_real_candle_passes_both_paths() -> None:
    candles = list(vision_candles("NEARUSDT"))
    for i in range(0, len(candles), 1000):
        chunk = candles[i : i + 1000]
        assert candles_from_raw(raw_batch(chunk, source="rest", received_at=0)) == (
            [replace(c, source="rest") for c in chunk],
            [],
        )
    assert all(candles_from_raw(_single(c, {}))[0][0].open_time == c.open_time for c in candles[::97])


def _weekly(open_time: int, base: Candle) -> Candle:
    close_time = open_time + 604_800_000 - 1
    return replace(base, interval="1w", open_time=open_time, close_time=close_time, event_time=close_time)


def test_weeks_open_on_monday_and_a_week_aligned_to_the_epoch_is_refused() -> None:
    base = vision_candles("LINKUSDT")[0]
    monday = bucket_start(base.open_time, "1w")
    assert (monday // 86_400_000 + 3) % 7 == 0  # 1970-01-01 was a Thursday: day 4 is a Monday
    week = _weekly(monday, base)
    assert candles_from_raw(raw_from_candle(week, source="rest", received_at=0))[0] == [
        replace(week, source="rest")
    ]
    thursday = monday - 4 * 86_400_000 + 7 * 86_400_000  # epoch-aligned, not Monday
    assert thursday % 604_800_000 == 0
    with pytest.raises(MalformedKlineError, match="not aligned to 1w"):
        candles_from_raw(raw_from_candle(_weekly(thursday, base), source="rest", received_at=0))
    good, refused = candles_from_raw(raw_batch([week, _weekly(thursday, base)], source="rest", received_at=0))
    assert good == [replace(week, source="rest")]
    assert refused == [(1, f"klines[1]: open time {thursday} is not aligned to 1w")]


def test_a_month_is_refused_as_an_unknown_interval() -> None:
    raw = _single(vision_candles("LINKUSDT")[0], {"i": "1M"})
    with pytest.raises(MalformedKlineError, match="unknown interval '1M'"):
        candles_from_raw(raw)


def test_resampled_candles_pass_the_same_checks_and_need_bars() -> None:
    ones = vision_candles("LINKUSDT")[:10]
    five = [
        Candle("LINKUSDT", "5m", b[0].open_time, b[0].open_time + 299_999, b[0].open, max(c.high for c in b),
               min(c.low for c in b), b[-1].close, sum(c.volume for c in b), None, None, None, None, True,
               "resample", bars=5, event_time=b[0].open_time + 299_999)
        for b in (ones[:5], ones[5:])
    ]  # fmt: skip
    assert five[0].open_time % 300_000 == 0
    assert candles_from_raw(raw_batch(five, source="resample", received_at=0)) == (five, [])
    assert candles_from_raw(raw_from_candle(five[0], source="resample", received_at=0))[0] == [five[0]]
    value = raw_batch(five, source="resample", received_at=0)
    value["bars"][1] = 0
    value["klines"][0][3] = repr(five[0].high * 2)  # low above high
    good, refused = candles_from_raw(value)
    assert good == []
    assert [i for i, _ in refused] == [0, 1]
    assert "high=" in refused[0][1] and "bars[1]=0" in refused[1][1]
    with pytest.raises(MalformedKlineError, match="bars=0"):
        candles_from_raw({**raw_from_candle(five[0], source="resample", received_at=0), "bars": 0})


def _outcome(f: Callable[[Any], Candle], value: Any) -> Candle | str:
    try:
        return f(value)
    except MalformedKlineError as exc:
        return f"refused: {exc}"


#: values a field of a websocket kline may take in the parity test: good, bad and odd shapes
_FIELD_VALUES = {
    "t": st.sampled_from([0, 1, 60_000, "60000", None, 1.5, True]),
    "T": st.sampled_from([59_999, 119_999, "59999", None, 60_000]),
    "o": st.sampled_from(["1.5", "0", "-1", "NaN", "Infinity", "x", None, 2]),
    "h": st.sampled_from(["2.5", "1e300", "inf", None, "0.1"]),
    "l": st.sampled_from(["0.5", "-0.0", "NaN", None]),
    "c": st.sampled_from(["1.0", "3.0", None]),
    "v": st.sampled_from(["10", "-1", "nan", None, 0]),
    "q": st.sampled_from(["1", None, "-1", "Infinity"]),
    "n": st.sampled_from([5, 0, -1, None, "5", 1.0, True]),
    "x": st.sampled_from([True, False, None, 1, "true"]),
    "i": st.sampled_from(["1m", "5m", "1w", "1M", "13m", None, 1]),
    "s": st.sampled_from(["LINKUSDT", "linkusdt", "", None, "LINK USDT", 5]),
}


@settings(max_examples=400, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=499),
    changes=st.dictionaries(st.sampled_from(sorted(_FIELD_VALUES)), st.none(), max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({k: _FIELD_VALUES[k] for k in keys})
    ),
    source=st.sampled_from(["ws", "rest", "resample", "bogus"]),
    bars=st.sampled_from([None, 1, 5, 0, "5"]),
)
def test_the_single_kline_fast_path_decides_as_the_field_by_field_path(
    index: int, changes: dict[str, Any], source: str, bars: Any
) -> None:
    """A real kline with any of its fields replaced by good, bad or oddly typed values: the
    fast path accepts what the field-by-field path accepts, with the very same candle, and
    hands everything else to it (so each refusal keeps its reason)."""
    c = vision_candles("LINKUSDT")[index]
    raw = _single(c, changes)
    raw["source"] = source
    if bars is not None:
        raw["bars"] = bars
    fast = _accepted_single(raw)
    reference = _outcome(checked_single, raw)
    if fast is not None:
        assert fast == reference
    if isinstance(reference, Candle):
        assert candle_from_raw(raw) == reference
    else:
        with pytest.raises(MalformedKlineError, match=re.escape(reference.removeprefix("refused: "))):
            candle_from_raw(raw)


def test_the_fast_path_takes_the_websocket_shape() -> None:
    """Real websocket-shaped klines go the fast way (the test above would pass with a fast
    path that never accepts anything)."""
    candles = vision_candles("LINKUSDT")[:200]
    assert all(_accepted_single(_single(c, {})) == replace(c, source="ws") for c in candles)
