"""Tier a: the streaming features on real data against the batch reference, without a broker."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from indicators.batch import features
from indicators.definitions import FEATURE_NAMES, LONGEST_LOOKBACK
from schemas.features import RowBlock
from schemas.klines import Candle
from tests.indicators.helpers import frame, mismatches
from tests.topologies.helpers import DictState, PlainState, vision_candles, xrp_candles
from topologies.feature_logic import (
    BLOCK_MIN,
    TRIM_SLACK,
    FeatureStream,
    NeedsHistory,
    StoredBar,
    rebuild,
    replay,
)

MIN = 60_000
OUTAGES = ((26_040, 150), (33_212, 283))  # (index of the first bar after, missing bars)


def stream(
    candles: Iterable[Candle], fs: FeatureStream | None = None, state: Any = None
) -> list[dict[str, Any]]:
    fs = fs or FeatureStream()
    state = state if state is not None else PlainState()
    rows = []
    for c in candles:
        out = fs.apply(c, "new", state)
        assert isinstance(out, list) and len(out) == 1
        rows.extend(out)
    return rows


@pytest.fixture(scope="module")
def xrp_rows() -> list[dict[str, Any]]:
    return stream(xrp_candles())


def test_streaming_equals_batch_on_the_whole_xrp_dump(xrp_rows: list[dict[str, Any]]) -> None:
    assert mismatches(xrp_rows, features(frame(xrp_candles()), MIN)) == []
    assert all(r["feature_version"] == 1 and r["reason"] == "new" for r in xrp_rows)


@pytest.mark.parametrize("page", [BLOCK_MIN, 500, 4096])
def test_pages_of_new_bars_are_derived_column_wise_bit_for_bit(
    xrp_rows: list[dict[str, Any]], page: int
) -> None:
    """A page of at least BLOCK_MIN new bars takes the column-wise path: the same rows, bit for
    bit, as one bar at a time, over the whole dump (its two real outages fall inside pages),
    with the state round-tripping through JSON as Quix stores it; a page longer than the ring,
    and one shorter than the longest lookback, included. Its columns hold what its rows do."""
    cs = xrp_candles()
    fs, state = FeatureStream(), DictState()
    got: list[dict[str, Any]] = []
    for at in range(0, len(cs), page):
        part = cs[at : at + page]
        out = fs.apply_many(part, ["new"] * len(part), state)
        assert isinstance(out, RowBlock) == (len(part) >= BLOCK_MIN)
        if isinstance(out, RowBlock):
            for key, col in out.columns.items():
                assert (list(col) * len(out) if len(col) == 1 else list(col)) == [r[key] for r in out], key
        got.extend(out)
    assert got == xrp_rows


@pytest.mark.parametrize("symbol", ["LINKUSDT", "NEARUSDT"])
def test_streaming_equals_batch_on_a_vision_month(symbol: str) -> None:
    cs = vision_candles(symbol)
    assert mismatches(stream(cs), features(frame(cs), MIN)) == []


def test_state_round_trips_through_json() -> None:
    """Through DictState (JSON on every get/set) the rows are the same as in memory."""
    cs = xrp_candles()[25_900:26_200]  # across the first outage
    assert stream(cs, state=DictState()) == stream(cs)


@pytest.mark.parametrize(("first_after", "missing"), OUTAGES)
def test_rows_after_a_real_outage_follow_the_gap_rule(
    xrp_rows: list[dict[str, Any]], first_after: int, missing: int
) -> None:
    cs = xrp_candles()
    assert cs[first_after].open_time - cs[first_after - 1].open_time == (missing + 1) * MIN
    before = xrp_rows[first_after - 1]
    assert before["window_complete"] and before["bars_missing_in_window"] == 0
    assert all(before[n] is not None for n in FEATURE_NAMES)
    for k in range(LONGEST_LOOKBACK + 5):
        row = xrp_rows[first_after + k]
        # the outage is longer than the window: slots before the run's first bar are all missing
        assert row["bars_missing_in_window"] == max(0, LONGEST_LOOKBACK - 1 - k)
        assert row["window_complete"] is (k >= LONGEST_LOOKBACK - 1)
        assert row["range_pct"] is not None
        assert (row["ret_1"] is None) is (k < 1)
        assert (row["ret_10"] is None) is (k < 10)
        assert (row["ema_12"] is None) is (k < 11)
        assert (row["ma_20"] is None) is (k < 19)
        assert (row["rsi_14"] is None) is (k < 14)
        assert (row["atr_14"] is None) is (k < 14)
        assert (row["rolling_vol_20"] is None) is (k < 20)
        assert (row["macd"] is None) is (k < 25)
        assert (row["macd_signal"] is None) is (k < 33)
        assert (row["ma_50"] is None) is (k < 49)
    # the recursive features re-seed: ema_12 at the run's 12th bar is the mean of its 12 closes
    run = cs[first_after : first_after + 26]
    assert xrp_rows[first_after + 11]["ema_12"] == pytest.approx(
        statistics.fmean(c.close for c in run[:12]), rel=1e-12
    )
    assert xrp_rows[first_after + 25]["ema_26"] == pytest.approx(
        statistics.fmean(c.close for c in run), rel=1e-12
    )
    assert xrp_rows[first_after + 1]["ret_1"] == pytest.approx(
        math.log(run[1].close / run[0].close), rel=1e-12
    )


def revised(c: Candle, f: float = 1.003) -> Candle:
    return dataclasses.replace(c, close=c.close * f, high=max(c.high, c.close * f), volume=c.volume * 1.5)


def by_time(rows: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {r["open_time"]: r for r in rows}


def test_a_repair_re_derives_its_window_and_its_run_forward() -> None:
    """A repair 30 bars before a 3-bar hole: rows from the bar to the hole (its run), and after
    the hole only those whose 50-slot window holds the bar; each with version 2."""
    cs = list(xrp_candles()[5_000:5_300])
    hole = {200, 201, 202}
    kept = [c for i, c in enumerate(cs) if i not in hole]
    fs, state = FeatureStream(ring_bars=400), PlainState()
    first = by_time(stream(kept, fs, state))
    r = cs[170].open_time
    out = fs.apply(revised(cs[170]), "repair", state)
    assert isinstance(out, list)
    expected = [c.open_time for c in kept if r <= c.open_time <= r + (LONGEST_LOOKBACK - 1) * MIN]
    assert [x["open_time"] for x in out] == expected
    assert {(x["feature_version"], x["reason"]) for x in out} == {(2, "repair")}
    assert all(x["window_has_repair"] for x in out)
    # past the hole only the window flag changed: the features re-seeded after the hole
    after = [x for x in out if x["open_time"] > cs[199].open_time]
    assert [x["open_time"] for x in after] == [c.open_time for c in cs[203:220]]  # slots 170 .. 219
    for x in after:
        assert {n: x[n] for n in FEATURE_NAMES} == {n: first[x["open_time"]][n] for n in FEATURE_NAMES}
        assert not first[x["open_time"]]["window_has_repair"]
    # the bar itself and its run changed
    assert out[0]["ret_1"] != first[r]["ret_1"]
    assert out[29]["ema_26"] != first[cs[199].open_time]["ema_26"]
    final = [revised(c) if c.open_time == r else c for c in kept]
    latest = by_time([*first.values(), *out])
    assert mismatches([latest[c.open_time] for c in final], features(frame(final, [r]), MIN)) == []


def test_a_repair_inside_a_long_run_re_derives_to_the_newest() -> None:
    cs = xrp_candles()[10_000:10_300]
    fs, state = FeatureStream(ring_bars=300), PlainState()
    stream(cs, fs, state)
    out = fs.apply(revised(cs[100]), "repair", state)
    assert isinstance(out, list)
    assert [x["open_time"] for x in out] == [c.open_time for c in cs[100:]]
    # the same values again: nothing to emit, no version spent
    assert fs.apply(revised(cs[100]), "repair", state) == []
    again = fs.apply(revised(cs[100], 0.999), "repair", state)
    assert isinstance(again, list) and {x["feature_version"] for x in again} == {3}


def test_late_fills_of_a_hole_say_late_fill_then_gap_repaired() -> None:
    cs = list(xrp_candles()[20_000:20_200])
    hole = (120, 121)
    fs, state = FeatureStream(ring_bars=250), PlainState()
    first = by_time(stream([c for i, c in enumerate(cs) if i not in hole], fs, state))
    after_hole = first[cs[122].open_time]
    assert after_hole["ret_1"] is None and after_hole["bars_missing_in_window"] == 2
    one = fs.apply(cs[121], "late_fill", state)
    assert isinstance(one, list) and {x["reason"] for x in one} == {"late_fill"}
    # the filled bar is new (version 1); the run after it is joined to it and derived again
    assert one[0]["open_time"] == cs[121].open_time and one[0]["feature_version"] == 1
    assert [x["open_time"] for x in one] == [c.open_time for c in cs[121:]]
    assert {x["feature_version"] for x in one[1:]} == {2}
    two = fs.apply(cs[120], "late_fill", state)
    assert isinstance(two, list) and {x["reason"] for x in two} == {"gap_repaired"}
    assert [x["open_time"] for x in two] == [c.open_time for c in cs[120:]]
    assert two[0]["feature_version"] == 1 and two[1]["feature_version"] == 2
    assert {x["feature_version"] for x in two[2:]} == {3}
    latest = by_time([*first.values(), *one, *two])
    assert latest[cs[199].open_time]["window_complete"] and latest[cs[150].open_time]["window_has_repair"]
    want = features(frame(cs, [cs[120].open_time, cs[121].open_time]), MIN)
    assert mismatches([latest[c.open_time] for c in cs], want) == []


def test_a_change_older_than_the_ring_needs_history_and_rebuild_restores_it() -> None:
    cs = xrp_candles()[30_000:30_400]
    fs, state = FeatureStream(ring_bars=80), PlainState()
    rows = by_time(stream(cs, fs, state))
    target = cs[300]
    need = fs.apply(revised(target), "repair", state)
    assert need == NeedsHistory(
        "XRPUSDT", "1m", target.open_time, target.open_time - LONGEST_LOOKBACK * MIN, cs[-1].open_time
    )
    stored = [
        StoredBar(c, False, rows[c.open_time]["feature_version"], rows[c.open_time]["carry"])
        for c in cs
        if need.from_open_time <= c.open_time <= need.to_open_time
    ]
    rebuild(stored, need.from_open_time, state)
    out = fs.apply(revised(target), "repair", state)
    assert isinstance(out, list) and [x["open_time"] for x in out] == [c.open_time for c in cs[300:]]
    # the same rows as a stream whose ring held everything
    big, big_state = FeatureStream(ring_bars=500), PlainState()
    stream(cs, big, big_state)
    assert out == big.apply(revised(target), "repair", big_state)
    # the ring keeps what the rebuild brought until the next new bar: a second change just as
    # far back is derived in state
    assert len(state.d["f"]["t"]) == LONGEST_LOOKBACK + 100
    nxt = fs.apply(revised(cs[301]), "repair", state)
    assert isinstance(nxt, list) and [x["open_time"] for x in nxt] == [c.open_time for c in cs[301:]]
    assert nxt == big.apply(revised(cs[301]), "repair", big_state)
    more = [dataclasses.replace(cs[-1], open_time=cs[-1].open_time + k * MIN) for k in range(1, 3)]
    for c in more:
        fs.apply(c, "new", state)
    assert 80 <= len(state.d["f"]["t"]) < 80 + TRIM_SLACK


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Candle], list[tuple[Candle, str]], set[int]]:
    """A real stretch (around an XRP outage or in a Vision month) and an arrival order with
    dropped ranges, bars held back and delivered late, and revised values."""
    src = draw(st.sampled_from(["xrp-outage", "xrp", "AVAXUSDT"]))
    n = draw(st.integers(120, 320))
    if src == "xrp-outage":
        lo = draw(st.integers(OUTAGES[0][0] - n + 10, OUTAGES[0][0] - 10))
        base = list(xrp_candles()[lo : lo + n])
    elif src == "xrp":
        lo = draw(st.integers(0, 61_000 - n))
        base = list(xrp_candles()[lo : lo + n])
    else:
        lo = draw(st.integers(0, 40_000 - n))
        base = list(vision_candles(src)[lo : lo + n])
    idx = st.integers(0, n - 1)
    dropped: set[int] = set()
    for a, w in draw(st.lists(st.tuples(idx, st.integers(1, 60)), max_size=3)):
        dropped.update(range(a, min(n, a + w)))
    late: set[int] = set()
    for a, w in draw(st.lists(st.tuples(idx, st.integers(1, 12)), max_size=4)):
        late.update(i for i in range(a, min(n, a + w)) if i not in dropped)
    revise = {i for i in draw(st.lists(idx, max_size=6)) if i not in dropped}
    final_idx = [i for i in range(n) if i not in dropped]
    on_time = [i for i in final_idx if i not in late]
    events: list[tuple[Candle, str]] = []
    for i in on_time:
        events.append((revised(base[i], 0.997) if i in revise else base[i], "new"))
    # late bars arrive anywhere after a later bar, revisions anywhere after their first version
    for i in draw(st.permutations(sorted(late))):
        t = base[i].open_time
        later = next((k for k, (c, _) in enumerate(events) if c.open_time > t), len(events) - 1)
        events.insert(draw(st.integers(later + 1, len(events))), (base[i], "late_fill"))
    for i in sorted(revise - late):
        k = next(k for k, (c, _) in enumerate(events) if c.open_time == base[i].open_time)
        events.insert(draw(st.integers(k + 1, len(events))), (base[i], "repair"))
    final = [base[i] for i in final_idx]
    repaired = {base[i].open_time for i in late | revise}
    return final, events, repaired


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=histories(),
    ring=st.sampled_from([60, 90, 400]),
    json_state=st.booleans(),
    chunk=st.sampled_from([1, 1, 5, 40]),
)
def test_any_history_ends_where_the_batch_over_the_final_candles_is(
    h: tuple[list[Candle], list[tuple[Candle, str]], set[int]], ring: int, json_state: bool, chunk: int
) -> None:
    """Events one by one (``apply``) or in batch records of ``chunk`` (``apply_many``)."""
    final, events, repaired = h
    fs = FeatureStream(ring_bars=ring)
    state: PlainState | DictState = DictState() if json_state else PlainState()
    latest: dict[int, dict[str, Any]] = {}
    record: dict[int, StoredBar] = {}  # what the sink stores: the candle, its flag, its last row
    flagged: set[int] = set()
    known: set[int] = set()

    def apply(part: list[tuple[Candle, str]]) -> list[dict[str, Any]] | NeedsHistory:
        if chunk == 1:
            return fs.apply(part[0][0], part[0][1], state)
        return fs.apply_many([c for c, _ in part], [k for _, k in part], state)

    for at in range(0, len(events), chunk):
        part = events[at : at + chunk]
        out = apply(part)
        if isinstance(out, NeedsHistory):
            event("needs history")
            bars = [record[t] for t in sorted(record) if out.from_open_time <= t <= out.to_open_time]
            rebuild(bars, out.from_open_time, state)
            out = apply(part)
        assert isinstance(out, list)
        # every event changes a bar: re-derived are exactly its 50 slots and the rest of its run,
        # over the bars known once the record is applied, each row once
        known.update(c.open_time for c, _ in part)
        want_times: set[int] = set()
        for c, _ in part:
            r = c.open_time
            run_end = r
            while run_end + MIN in known:
                run_end += MIN
            reach = max(run_end, r + (LONGEST_LOOKBACK - 1) * MIN)
            want_times.update(t for t in known if r <= t <= reach)
        assert [x["open_time"] for x in out] == sorted(want_times)
        flagged.update(c.open_time for c, kind in part if kind != "new")
        cands = {c.open_time: c for c, _ in part}
        for row in out:
            event(row["reason"])
            t = row["open_time"]
            prev = latest.get(t)
            assert row["feature_version"] == (prev["feature_version"] + 1 if prev else 1)
            latest[t] = row
            record[t] = StoredBar(
                cands.get(t) or record[t].candle, t in flagged, row["feature_version"], row["carry"]
            )
    assert sorted(latest) == [c.open_time for c in final]
    want = features(frame(final, repaired), MIN)
    assert mismatches([latest[c.open_time] for c in final], want) == []


def test_state_rebuilt_from_stored_rows_continues_like_the_uninterrupted_stream() -> None:
    """The state is lost 40 bars before the first real outage: rebuilt from the last 100 stored
    bars (candles, versions, carries), the stream goes on across the outage as if never lost."""
    cs = xrp_candles()[25_000:26_400]
    cut = OUTAGES[0][0] - 25_000 - 40
    whole = stream(cs)
    fs, state = FeatureStream(), PlainState()
    done = stream(cs[:cut], fs, state)
    stored = [
        StoredBar(c, False, r["feature_version"], r["carry"]) for c, r in zip(cs[:cut], done, strict=True)
    ]
    fresh = PlainState()
    rebuild(stored[-100:], cs[cut - 100].open_time, fresh)
    assert stream(cs[cut:], fs, fresh) == whole[cut:]
    # without the carries the recursive features could not go on
    broken = PlainState()
    no_carry = [0, None, None, None, None, None, None, None]
    rebuild([dataclasses.replace(b, carry=no_carry) for b in stored[-100:]], cs[cut - 100].open_time, broken)
    assert stream(cs[cut:], fs, broken)[0]["ema_26"] is None


def test_a_backfill_page_re_derives_each_row_once() -> None:
    """60 real bars held back and delivered as one batch record of late fills (oldest first):
    every affected row derived once, ending as one by one would; the real outage 140 bars later
    stops the re-derivation (the EMA/Wilder features re-seeded after it)."""
    lo, hi = OUTAGES[1][0] - 400, OUTAGES[1][0] + 300
    cs = list(xrp_candles()[lo:hi])
    hole = range(200, 260)
    kept = [c for i, c in enumerate(cs) if i not in hole]
    fs, state = FeatureStream(ring_bars=800), PlainState()
    first = by_time(stream(kept, fs, state))
    page = [cs[i] for i in hole]
    out = fs.apply_many(page, ["late_fill"] * len(page), state)
    assert isinstance(out, list)
    assert [x["open_time"] for x in out] == [c.open_time for c in cs[200:400]]
    got = by_time(out)
    assert [got[c.open_time]["feature_version"] for c in cs[200:400]] == [1] * 60 + [2] * 140
    assert {got[c.open_time]["reason"] for c in cs[200:259]} == {"late_fill"}
    assert got[cs[259].open_time]["reason"] == "gap_repaired"  # the last fill closes the hole
    assert {got[c.open_time]["reason"] for c in cs[260:400]} == {"gap_repaired"}
    # one by one ends with the same values (and higher versions: one per re-derivation)
    one_fs, one_state = FeatureStream(ring_bars=800), PlainState()
    stream(kept, one_fs, one_state)
    last: dict[int, dict[str, Any]] = {}
    for c in page:
        rows = one_fs.apply(c, "late_fill", one_state)
        assert isinstance(rows, list)
        last.update(by_time(rows))
    strip = ("feature_version", "reason")
    assert [{k: v for k, v in got[t].items() if k not in strip} for t in sorted(got)] == [
        {k: v for k, v in last[t].items() if k not in strip} for t in sorted(got)
    ]
    # one by one, the bar after the hole was derived again by each of the 49 fills within 50 slots
    assert (
        last[cs[260].open_time]["feature_version"] == 50 and last[cs[399].open_time]["feature_version"] == 2
    )
    want = features(frame(cs, [c.open_time for c in page]), MIN)
    assert mismatches([got.get(c.open_time) or first[c.open_time] for c in cs], want) == []
    # a page of new candles is the same rows as one by one
    fresh, fresh_state = FeatureStream(), PlainState()
    paged = fresh.apply_many(cs[:300], ["new"] * 300, fresh_state)
    assert paged == stream(cs[:300])


def test_a_5m_stream_from_real_1m_bars_equals_batch() -> None:
    """The interval's grid comes from the candle: 5m bars made of real LINK 1m bars, with two
    5m bars dropped, stream and batch agree with a 5m step."""
    ones = vision_candles("LINKUSDT")[:6000]
    fives = []
    for k in range(0, len(ones), 5):
        g = ones[k : k + 5]
        fives.append(dataclasses.replace(
            g[0], interval="5m", close_time=g[-1].close_time, high=max(c.high for c in g),
            low=min(c.low for c in g), close=g[-1].close, volume=sum(c.volume for c in g),
        ))  # fmt: skip
    del fives[500:502]
    rows = stream(fives)
    assert rows[500]["bars_missing_in_window"] == 2 and rows[500]["ret_1"] is None
    assert mismatches(rows, features(frame(fives), 5 * MIN)) == []


def test_replay_from_a_run_start_restores_the_state_from_candles_alone() -> None:
    """No carries stored: replaying the candles from the first bar after the first real outage
    (a run start) gives that stretch's rows and a state that goes on as the whole stream does."""
    cs = xrp_candles()
    start = OUTAGES[0][0]
    whole = stream(cs[start - 500 : start + 1000])
    state = PlainState()
    rows = replay(cs[start : start + 400], set(), {}, state)
    strip = ("feature_version", "reason")
    assert [{k: v for k, v in r.items() if k not in strip} for r in rows] == [
        {k: v for k, v in r.items() if k not in strip} for r in whole[500:900]
    ]
    assert stream(cs[start + 400 : start + 1000], FeatureStream(), state) == whole[900:]
    # from the middle of a run the recursive features would seed in the wrong place
    mid = PlainState()
    replay(cs[start + 100 : start + 400], set(), {}, mid)
    assert stream(cs[start + 400 : start + 401], FeatureStream(), mid)[0]["ema_26"] != whole[900]["ema_26"]
