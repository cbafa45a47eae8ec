"""Tier a, property-based: injected faults on real candles never corrupt the record.

Each example takes a window of a few hundred real 1m candles (Binance Vision, LINKUSDT 2026-02,
which has no gap of its own) and delivers it with a mix of faults drawn by hypothesis: dropped
ranges (some lost for good, some re-sent at the end as a backfill would), exact duplicates,
bounded reordering (no candle moves more than ``k`` positions), revised re-sends (source "rest",
different close/high/volume) and, optionally, a process restart that keeps the local state,
loses it, or finds it behind the durable record (the state of an earlier checkpoint, as after a
kill between the sink's flush and the state's: nothing is replayed).

The deliveries run through the pure tier as ``topologies.candles.make_step`` wires it: raw kline
-> CandleStateMachine (1m) -> its append/repair candles -> Resampler (same key's state) -> raw
klines (decoded with ``candle_from_raw``) -> CandleStateMachine (5m, 1h). Every output goes into
``Record``, an in-memory ClickHouse under FINAL (latest version per natural key, rows built by
the sink's own ``Rows``), which is also the machine's ``Lookup`` and the resampler's
``BarSource``.

The truth each property compares against is computed from the fault plan and the delivery
order only, never from the machine's outputs. ``PROPERTY_EXAMPLES=500`` runs a deeper search.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from schemas.intervals import bucket_start, interval_ms
from schemas.klines import Candle, candle_from_raw, candles_from_raw, raw_batch, raw_from_candle
from sinks.clickhouse import CANDLE_COLUMNS, EVENT_COLUMNS, SEGMENT_COLUMNS, Rows
from tests.topologies.helpers import DictState, vision_candles, xrp_candles
from topologies.candle_logic import META, CandleStateMachine, Known
from topologies.candles import higher_records
from topologies.resample import Resampler, candles_of_event
from topologies.seed import OPEN_STATES

MIN = 60_000
RESAMPLE = ("5m", "1h")
K_MAX = 5
RESTARTS = ("keep", "lose", "behind")
#: the last XRP bar before the dump's first real outage (2021-04-20 01:59 UTC; 150 bars missing)
XRP_OUTAGE_AFTER = 1618883940000
XRP_OUTAGE = frozenset(range(XRP_OUTAGE_AFTER + MIN, XRP_OUTAGE_AFTER + 151 * MIN, MIN))

FAST = settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- the durable record ------------------------------------------------------------------
class FastState(DictState):
    """``DictState`` with the same JSON round trip of values, through orjson (10x faster)."""

    def get(self, key: str, default: Any = None) -> Any:
        v = self.d.get(key, default)
        return orjson.loads(orjson.dumps(v)) if v is not None else v

    def set(self, key: str, value: Any) -> None:
        self.d[key] = orjson.loads(orjson.dumps(value))


class Record:
    """What the ClickHouse sink would have stored, read as under FINAL.

    Rows are built by ``sinks.clickhouse.Rows`` (the sink's own row builder) and kept per natural
    key like the ReplacingMergeTree tables: the highest ``version`` wins, equal versions keep the
    last inserted row, ``ohlcv_events`` (no version column) keeps the last inserted row. Reads
    answer the ``Lookup`` and ``BarSource`` protocols the way ``topologies.seed`` queries them.
    """

    def __init__(self) -> None:
        #: (symbol, interval) -> open_time -> row
        self.candles: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
        #: (symbol, interval) -> segment_id -> row
        self.segments: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
        #: (symbol, interval) -> seq -> row
        self.events: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)

    @staticmethod
    def _replace(table: dict[int, dict[str, Any]], key: int, row: dict[str, Any], versioned: bool) -> None:
        old = table.get(key)
        if old is None or not versioned or row["version"] >= old["version"]:
            table[key] = row

    def ingest(self, outs: Iterable[dict[str, Any]]) -> None:
        rows = Rows()
        for o in outs:
            rows.add(o, 0)
        for r in rows.candle_rows():
            row = dict(zip(CANDLE_COLUMNS, r, strict=True))
            self._replace(self.candles[row["symbol"], row["interval"]], row["open_time"], row, True)
        for r in rows.segments:
            row = dict(zip(SEGMENT_COLUMNS, r, strict=True))
            self._replace(self.segments[row["symbol"], row["interval"]], row["segment_id"], row, True)
        for r in rows.events:
            row = dict(zip(EVENT_COLUMNS, r, strict=True))
            self._replace(self.events[row["symbol"], row["interval"]], row["seq"], row, False)

    def closed(self, symbol: str, interval: str) -> dict[int, dict[str, Any]]:
        return {t: r for t, r in self.candles[symbol, interval].items() if r["is_closed"]}

    def open_segments(self, symbol: str, interval: str) -> list[dict[str, Any]]:
        rows = [r for r in self.segments[symbol, interval].values() if r["state"] in OPEN_STATES]
        return sorted(rows, key=lambda r: r["from_open_time"])

    # Lookup
    def seed(self, symbol: str, interval: str) -> dict[str, Any]:
        closed = self.closed(symbol, interval)
        return {
            "first_closed": min(closed) if closed else None,
            "last_closed": max(closed) if closed else None,
            "seq": max(self.events[symbol, interval], default=0),
            "segments": [
                [r["segment_id"], r["from_open_time"], r["to_open_time"], r["detected_at"], r["segment_end"]]
                for r in self.open_segments(symbol, interval)
            ],
        }

    def closed_candles(self, symbol: str, interval: str, open_times: list[int]) -> dict[int, Known]:
        rows = self.candles[symbol, interval]
        return {
            t: (row_values(r), int(r["revision"]))
            for t in open_times
            if (r := rows.get(t)) is not None and r["is_closed"]
        }

    # BarSource
    def bars_between(self, symbol: str, start_ms: int, end_ms: int) -> dict[int, list[Any]]:
        return {
            t: [r["open"], r["high"], r["low"], r["close"], r["volume"], r["quote_volume"], r["trades"],
                r["taker_buy_base"], r["taker_buy_quote"]]
            for t, r in self.closed(symbol, "1m").items() if start_ms <= t < end_ms
        }  # fmt: skip

    def last_stored(self, symbol: str) -> int:
        return max(self.closed(symbol, "1m"), default=-1)


def row_values(r: dict[str, Any]) -> list[Any]:
    """The values of a stored candle row, in ``candle_logic.fingerprint`` order."""
    return [r["open"], r["high"], r["low"], r["close"], r["volume"], r["quote_volume"], r["trades"],
            r["taker_buy_base"], r["taker_buy_quote"], r["bars"]]  # fmt: skip


def values(c: Candle) -> list[Any]:
    return [c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades, c.taker_buy_base,
            c.taker_buy_quote, c.bars]  # fmt: skip


# --- fault plans -------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Which faults to inject into ``length`` candles of a source starting at ``start``.

    Offsets are positions in the window. ``drops`` are (offset, length, resent); a bar in any
    never-resent range is lost for good. ``revisions`` are (offset, number of changed re-sends).
    ``restart`` is (per-mille of the deliveries, what the new process finds in its state) or None;
    "behind" is the state as it was at half the restart position.
    """

    start: int
    length: int
    drops: tuple[tuple[int, int, bool], ...]
    dups: tuple[int, ...]
    revisions: tuple[tuple[int, int], ...]
    k: int
    seed: int
    tail_reversed: bool
    restart: tuple[int, str] | None

    @property
    def dropped(self) -> set[int]:
        return {o for off, n, _ in self.drops for o in range(off, min(off + n, self.length))}

    @property
    def lost(self) -> set[int]:
        return {
            o for off, n, resent in self.drops if not resent for o in range(off, min(off + n, self.length))
        }


@st.composite
def plans(draw: st.DrawFn, n_source: int, *, all_resent: bool = False, min_len: int = 150,
          max_len: int = 360, start: int | None = None) -> Plan:  # fmt: skip
    length = draw(st.integers(min_len, max_len)) if start is None else max_len
    if start is None:
        start = draw(st.integers(0, n_source - length))
    if all_resent:  # at least one drop, inside the window: its neighbours arrive before it
        drop = st.tuples(st.integers(1, length - 42), st.integers(1, 40), st.just(True))
    else:
        drop = st.tuples(st.integers(0, length - 1), st.integers(1, 40), st.booleans())
    drops = draw(st.lists(drop, min_size=int(all_resent), max_size=4))
    dups = draw(st.lists(st.integers(0, length - 1), max_size=12, unique=True))
    revisions = draw(st.lists(st.tuples(st.integers(0, length - 1), st.integers(1, 3)), max_size=6,
                              unique_by=lambda r: r[0]))  # fmt: skip
    restart = draw(st.none() | st.tuples(st.integers(1, 999), st.sampled_from(RESTARTS)))
    k = draw(st.integers(0, K_MAX))
    seed = draw(st.integers(0, 2**32 - 1))
    return Plan(start=start, length=length, drops=tuple(drops), dups=tuple(sorted(dups)),
                revisions=tuple(revisions), k=k, seed=seed, tail_reversed=draw(st.booleans()),
                restart=restart)  # fmt: skip


def revised(c: Candle, r: int) -> Candle:
    """The ``r``-th changed re-send of ``c``, as a REST repair would bring it."""
    close = c.close + r * 0.001
    return dataclasses.replace(c, close=close, high=max(c.high, close), volume=c.volume + r, source="rest")


def jittered(items: list[Candle], k: int, rng: random.Random) -> list[Candle]:
    """``items`` with each one moved at most ``k`` positions (sorted by index + U{0..k})."""
    keyed = sorted((i + rng.randint(0, k), i) for i in range(len(items)))
    return [items[i] for _, i in keyed]


def deliveries(window: Sequence[Candle], plan: Plan) -> list[Candle]:
    rng = random.Random(plan.seed)
    dropped, lost = plan.dropped, plan.lost
    main: list[Candle] = []
    for o in range(plan.length):
        if o not in dropped:
            main.extend([window[o]] * (2 if o in plan.dups else 1))
    late: list[Candle] = []
    for o in sorted(dropped - lost, reverse=plan.tail_reversed):
        late.extend([window[o]] * (2 if o in plan.dups else 1))
    late.extend(revised(window[o], r) for o, n in plan.revisions if o not in lost for r in range(1, n + 1))
    return jittered(main, plan.k, rng) + jittered(late, plan.k, rng)


# --- the pure pipeline -------------------------------------------------------------------
def through_raw(c: Candle) -> Candle:
    """A candle as the topology sees it after the raw topic (JSON, Binance strings)."""
    return candle_from_raw(orjson.loads(orjson.dumps(raw_from_candle(c, source=c.source, received_at=0))))


class Pipeline:
    """The candle topology as ``topologies.candles.make_step`` wires it, without Kafka: the
    resampler runs inside the 1m step, in the same key's state, and the higher candles it emits
    go back through the raw topic into the candle machine."""

    def __init__(self) -> None:
        self.record = Record()
        ticks = itertools.count(1_800_000_000_000)
        self.clock = lambda: next(ticks)
        self.states: dict[str, FastState] = {}
        #: every output of every stream, in emission order
        self.outputs: list[dict[str, Any]] = []
        #: every candle fed to the candle machine with the outputs of its own step, per interval
        self.steps: dict[str, list[tuple[Candle, list[dict[str, Any]]]]] = defaultdict(list)
        self.restart("keep")
        #: open times a batched simulation sent as a record of their own
        self.alone: set[int] = set()

    def snapshot(self) -> dict[str, FastState]:
        """A copy of the local state, as a checkpoint would have committed it."""
        return copy.deepcopy(self.states)

    def restart(self, state: str, snapshot: dict[str, FastState] | None = None) -> None:
        """A new process: fresh machine and resampler (re-seeded from the record on first touch),
        finding its local state as it was ("keep"), empty ("lose") or at ``snapshot`` ("behind")."""
        self.machine = CandleStateMachine(self.record, self.clock)
        self.resampler = Resampler(list(RESAMPLE), self.record, self.clock)
        if state == "lose":
            self.states = {}
        elif state == "behind":
            assert snapshot is not None
            self.states = snapshot

    def feed(self, c: Candle) -> list[dict[str, Any]]:
        """One raw kline through the step; the higher candles it completes are fed after it."""
        state = self.states.setdefault(c.key, FastState())
        outs = self.machine.apply(c, state)
        self.steps[c.interval].append((c, outs))
        higher = []
        if c.interval == "1m":
            for o in outs:
                if o["kind"] == "event":
                    for candle in candles_of_event(o):
                        higher.extend(self.resampler.apply(c.symbol, candle, state))
        self.record.ingest(outs)
        self.outputs.extend(outs)
        for h in higher:
            self.feed(through_raw(h))
        return outs

    def feed_batch(self, cs: Sequence[Candle]) -> None:
        """One batch record (closed candles of one stream) through the step, as
        ``topologies.candles.make_step`` does: the higher candles it completes go back as one
        batch record per stream, the last emission of each bucket only."""
        c0 = cs[0]
        state = self.states.setdefault(c0.key, FastState())
        outs = self.machine.apply_many(cs, state)
        higher: list[Candle] = []
        if c0.interval == "1m":
            closed = [c for o in outs if o["kind"] == "event" for c in candles_of_event(o)]
            higher = self.resampler.apply_many(c0.symbol, closed, state)
        self.record.ingest(outs)
        self.outputs.extend(outs)
        for rec in higher_records(higher, 0):
            value = orjson.loads(orjson.dumps(rec["value"]))
            hs, bad = candles_from_raw(value)
            assert not bad
            self.feed_batch(hs)


@dataclass
class Run:
    window: Sequence[Candle]
    plan: Plan
    delivered: list[Candle]
    pipe: Pipeline

    @property
    def steps(self) -> list[tuple[Candle, list[dict[str, Any]]]]:
        """Each delivered 1m candle with the outputs of its own step."""
        return self.pipe.steps["1m"]

    def events(self, interval: str, typ: str | None = None) -> list[dict[str, Any]]:
        return [o for o in self.pipe.outputs if o["kind"] == "event" and o["interval"] == interval
                and (typ is None or o["type"] == typ)]  # fmt: skip

    def truth(self) -> dict[int, Candle]:
        """The latest values sent for every open time that was sent at least once."""
        return {c.open_time: c for c in self.delivered}


def simulate(window: Sequence[Candle], plan: Plan) -> Run:
    note(repr(plan))
    delivered = [through_raw(c) for c in deliveries(window, plan)]
    pipe = Pipeline()
    restart_at = None if plan.restart is None else plan.restart[0] * len(delivered) // 1000
    snapshot = None
    for i, c in enumerate(delivered):
        if restart_at is not None and i == restart_at // 2:
            snapshot = pipe.snapshot()
        if i == restart_at:
            assert plan.restart is not None
            pipe.restart(plan.restart[1], snapshot)
        pipe.feed(c)
    return Run(window, plan, delivered, pipe)


def window_of(source: Sequence[Candle], plan: Plan) -> Sequence[Candle]:
    return source[plan.start : plan.start + plan.length]


# --- checks shared by the properties -----------------------------------------------------
def bars(frm: int, to: int, step: int) -> set[int]:
    return set(range(frm, to + step, step))


def runs_of(times: Iterable[int], step: int) -> list[tuple[int, int]]:
    """Maximal runs of consecutive open times, as (first, last)."""
    out: list[tuple[int, int]] = []
    for t in sorted(times):
        if out and t == out[-1][1] + step:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def still_missing(present: set[int], step: int) -> set[int]:
    if not present:
        return set()
    return bars(min(present), max(present), step) - present


def check_gaps(run: Run, symbol: str, interval: str) -> set[int]:
    """(b) for one stream: open segments (state and record) == the runs of still-missing bars;
    every missing bar was reported by gap_detected and none by gap_repaired; no gap_detected
    names a bar that had already arrived, no gap_repaired one that has not. Returns the missing set."""
    step = interval_ms(interval)
    missing = still_missing({c.open_time for c, _ in run.pipe.steps[interval]}, step)
    expected_runs = runs_of(missing, step)
    state = run.pipe.states.get(f"{symbol}:{interval}")
    if state is not None:  # None: the state was lost in a restart and the stream not touched since
        assert [(s[1], s[2]) for s in state.get(META)["segs"]] == expected_runs, f"{interval}: state segments"
    stored = run.pipe.record.open_segments(symbol, interval)
    assert [(r["from_open_time"], r["to_open_time"]) for r in stored] == expected_runs, f"{interval}: stored"
    assert all(r["missing_bars"] == (r["to_open_time"] - r["from_open_time"]) // step + 1 for r in stored)

    # replay the stream in order: detections name only bars not yet seen, repairs only seen ones
    seen: set[int] = set()
    detected: set[int] = set()
    repaired: set[int] = set()
    for c, outs in run.pipe.steps[interval]:
        seen.add(c.open_time)
        for e in outs:
            if e["kind"] != "event":
                continue
            if e["type"] == "gap_detected":
                span = bars(e["from_open_time"], e["to_open_time"], step)
                assert e["missing_bars"] == len(span)
                assert not span & seen, f"{interval}: gap_detected {e} names bars that had arrived"
                assert not span & detected, f"{interval}: bars detected twice"
                detected |= span
            elif e["type"] == "gap_repaired":
                span = bars(e["from_open_time"], e["to_open_time"], step)
                assert e["missing_bars"] == len(span)
                assert span <= seen, f"{interval}: gap_repaired {e} before all its bars arrived"
                assert span <= detected, f"{interval}: gap_repaired {e} for bars never detected"
                assert not span & repaired, f"{interval}: bars repaired twice"
                repaired |= span
    assert missing <= detected, f"{interval}: missing bars never reported"
    assert not missing & repaired, f"{interval}: missing bars reported repaired"
    # (c) a detected bar that arrived is in a gap_repaired range, or in a segment still open
    still_open = set().union(*(bars(r["segment_id"], r["segment_end"], step) for r in stored))
    assert detected - missing <= repaired | still_open, f"{interval}: filled gap never reported repaired"
    return missing


def check_seqs(run: Run) -> None:
    """(d) per stream, emitted seqs are exactly 1..N in emission order, and stored as such."""
    by_stream: dict[str, list[int]] = defaultdict(list)
    for o in run.pipe.outputs:
        if o["kind"] == "event":
            by_stream[o["interval"]].append(o["seq"])
    assert by_stream["1m"], "no 1m events at all"
    for interval, seqs in by_stream.items():
        assert seqs == list(range(1, len(seqs) + 1)), f"{interval}: seqs {seqs[:20]}..."
        stored = sorted(run.pipe.record.events[run.window[0].symbol, interval])
        assert stored == seqs, f"{interval}: stored seqs"


def check_revisions(run: Run, interval: str) -> dict[int, int]:
    """(e) for one stream, step by step: a first arrival appends (late iff older than the newest),
    an identical re-send emits nothing at all, a changed one emits exactly one ``repair`` with the
    next revision. Returns the revision count per open time."""
    current: dict[int, list[Any]] = {}
    revision: dict[int, int] = {}
    newest: int | None = None
    for c, outs in run.pipe.steps[interval]:
        t = c.open_time
        events = [o for o in outs if o["kind"] == "event"]
        if t not in current:
            (append,) = [e for e in events if e["type"] in ("append", "repair")]
            late = newest is not None and t < newest
            assert (append["type"], append["late"], append["count"]) == ("append", late, 1), f"{interval}@{t}"
            assert [x["open_time"] for x in append["candles"]] == [t]
            assert [e["type"] for e in events].count("partial_close") == (0 if late else 1)
            revision[t] = 0
        elif values(c) == current[t]:
            assert outs == [], f"{interval}@{t}: an identical re-send emitted {outs}"
        else:
            revision[t] += 1
            assert [(e["type"], e["revision"], e["candle"]["revision"], e["source"]) for e in events] == [
                ("repair", revision[t], revision[t], c.source)
            ], f"{interval}@{t}"
            previous = dict(zip(("open", "high", "low", "close", "volume"), current[t][:5], strict=True))
            assert events[0]["previous"] == previous
            assert [o["kind"] for o in outs] == ["event"]
        current[t] = values(c)
        newest = t if newest is None else max(newest, t)
    stored = run.pipe.record.closed(run.window[0].symbol, interval)
    assert {t: r["revision"] for t, r in stored.items()} == revision, f"{interval}: stored revisions"
    return revision


def spans(events: Iterable[dict[str, Any]], step: int) -> set[int]:
    return set().union(*(bars(e["from_open_time"], e["to_open_time"], step) for e in events))


def lost_times(run: Run) -> set[int]:
    return {run.window[o].open_time for o in run.plan.lost}


def inside(times: Iterable[int], run: Run) -> set[int]:
    """``times`` strictly between the oldest and the newest open time that arrived."""
    arrived = {c.open_time for c in run.delivered}
    return {t for t in times if min(arrived) < t < max(arrived)}


# --- the properties: Binance Vision, LINKUSDT 2026-02 --------------------------------------
SYMBOL = "LINKUSDT"
VISION_BARS = 40_320  # 28 days of 1m bars, no gap of its own (test_candle_logic)


def link_run(plan: Plan) -> Run:
    return simulate(window_of(vision_candles(SYMBOL), plan), plan)


@FAST
@given(plan=plans(VISION_BARS))
def test_stored_candles_are_the_latest_values_of_everything_sent(plan: Plan) -> None:
    """(a) under FINAL: every candle sent at least once, with its latest values; lost ones absent."""
    run = link_run(plan)
    stored = run.pipe.record.closed(SYMBOL, "1m")
    assert set(stored) == {c.open_time for o, c in enumerate(run.window) if o not in plan.lost}
    truth = run.truth()
    for t, row in stored.items():
        assert (row_values(row), row["source"], row["close_time"]) == (
            values(truth[t]),
            truth[t].source,
            t + MIN - 1,
        ), f"1m@{t}"


@FAST
@given(plan=plans(VISION_BARS))
def test_open_gaps_are_exactly_the_ranges_still_missing(plan: Plan) -> None:
    """(b) detected minus repaired == still missing == open segments (state and stored), per stream."""
    run = link_run(plan)
    missing = check_gaps(run, SYMBOL, "1m")
    assert missing == inside(lost_times(run), run)
    for interval in RESAMPLE:
        check_gaps(run, SYMBOL, interval)


@FAST
@given(plan=plans(VISION_BARS, all_resent=True))
def test_every_gap_closes_with_gap_repaired_once_everything_is_resent(plan: Plan) -> None:
    """(c) all dropped ranges re-sent: every detected bar is covered by a gap_repaired range, no
    segment stays open, and every stored segment ends 'repaired'."""
    run = link_run(plan)
    assert run.events("1m", "gap_detected"), "an interior drop re-sent at the end must be seen first"
    for interval in ("1m", *RESAMPLE):
        step = interval_ms(interval)
        assert check_gaps(run, SYMBOL, interval) == set()
        detected = spans(run.events(interval, "gap_detected"), step)
        assert spans(run.events(interval, "gap_repaired"), step) == detected, interval
        segments = list(run.pipe.record.segments[SYMBOL, interval].values())
        assert {r["state"] for r in segments} <= {"repaired"}, interval
        assert len(segments) == len(run.events(interval, "gap_repaired")), interval


@FAST
@given(plan=plans(VISION_BARS))
def test_seq_is_one_to_n_per_stream(plan: Plan) -> None:
    """(d) across restarts, each stream's events carry seq 1..N, in emission order, no repeat."""
    check_seqs(link_run(plan))


@FAST
@given(plan=plans(VISION_BARS))
# a restart whose state is behind the record: the 1h candle changed since the state's checkpoint
@example(plan=Plan(start=269, length=173, drops=(), dups=(0, 31, 32, 33, 34), revisions=((0, 1),), k=2,
                   seed=48, tail_reversed=False, restart=(358, "behind")))  # fmt: skip
def test_revisions_count_changed_resends_and_duplicates_emit_nothing(plan: Plan) -> None:
    """(e) per stream and step: +1 revision per changed re-send, nothing for an identical one."""
    run = link_run(plan)
    revision = check_revisions(run, "1m")
    revised = {run.window[o].open_time for o, _ in plan.revisions if o not in plan.lost}
    assert {t for t, n in revision.items() if n} == revised
    for interval in RESAMPLE:
        check_revisions(run, interval)


@FAST
@given(plan=plans(VISION_BARS))
# a restart that loses the state, right before a late bar of a bucket that stays incomplete
@example(plan=Plan(start=0, length=20, drops=((7, 1, False), (6, 1, True)), dups=(), revisions=(), k=0,
                   seed=0, tail_reversed=False, restart=(999, "lose")))  # fmt: skip
# a restart whose state is behind the record, right before a revision of a bar it holds stale
@example(plan=Plan(start=0, length=150, drops=(), dups=(), revisions=((64, 1), (60, 1)), k=0, seed=0,
                   tail_reversed=False, restart=(994, "behind")))  # fmt: skip
def test_resampled_candles_equal_a_batch_aggregation_of_the_final_1m_table(plan: Plan) -> None:
    """(f) every 5m/1h bucket that is complete or followed by a later 1m bar is stored, equal to
    first open / max high / min low / last close / summed volumes / bar count of the final 1m
    table; no other bucket is stored."""
    run = link_run(plan)
    final = sorted(run.truth().values(), key=lambda c: c.open_time)
    newest = final[-1].open_time
    for interval in RESAMPLE:
        step = interval_ms(interval)
        buckets: dict[int, list[Candle]] = defaultdict(list)
        for c in final:
            buckets[bucket_start(c.open_time, interval)].append(c)
        due = {b: cs for b, cs in buckets.items() if len(cs) == step // MIN or b + step <= newest}
        stored = run.pipe.record.closed(SYMBOL, interval)
        assert set(stored) == set(due), interval
        for b, cs in due.items():
            r = stored[b]
            where = f"{interval}@{b}"
            assert (r["open"], r["high"], r["low"], r["close"]) == (
                cs[0].open, max(c.high for c in cs), min(c.low for c in cs), cs[-1].close
            ), where  # fmt: skip
            assert (r["bars"], r["trades"], r["close_time"], r["source"]) == (
                len(cs), sum(c.trades or 0 for c in cs), b + step - 1, "resample"
            ), where  # fmt: skip
            for field in ("volume", "quote_volume", "taker_buy_base", "taker_buy_quote"):
                want = sum(getattr(c, field) for c in cs)
                assert math.isclose(r[field], want, rel_tol=1e-9), f"{where} {field}: {r[field]} != {want}"


# --- the real XRP dump around its first outage --------------------------------------------
XRP_WINDOW = 400  # 200 bars before the outage, 200 after


def xrp_window() -> Sequence[Candle]:
    cs = xrp_candles()
    i = next(i for i, c in enumerate(cs) if c.open_time == XRP_OUTAGE_AFTER)
    window = cs[i - 199 : i + 201]
    assert len(window) == XRP_WINDOW and window[200].open_time == XRP_OUTAGE_AFTER + 151 * MIN
    return window


@FAST
@given(plan=plans(XRP_WINDOW, start=0, max_len=XRP_WINDOW))
def test_xrp_faults_create_no_gap_but_the_real_outage_and_the_lost_ranges(plan: Plan) -> None:
    """Faults injected around a real outage: the gaps left open are the outage (merged with any
    lost range touching it) and the lost ranges, nothing else; seqs stay 1..N."""
    run = simulate(xrp_window(), plan)
    missing = check_gaps(run, "XRPUSDT", "1m")
    assert missing >= XRP_OUTAGE  # at most 160 bars are dropped: both sides of it arrive
    assert missing == inside(XRP_OUTAGE | lost_times(run), run)
    check_seqs(run)


# --- batch records: the same truth as one kline per record --------------------------------
def simulate_batched(window: Sequence[Candle], plan: Plan, sizes: Sequence[int]) -> Run:
    """The deliveries of ``plan`` (no restart), consecutive ones grouped into batch records of
    ``sizes[i % len(sizes)]`` candles."""
    delivered = [through_raw(c) for c in deliveries(window, plan)]
    pipe = Pipeline()
    i = k = 0
    while i < len(delivered):
        chunk = delivered[i : i + sizes[k % len(sizes)]]
        if len(chunk) == 1:
            pipe.alone.add(chunk[0].open_time)
        rec = orjson.loads(orjson.dumps(raw_batch(chunk, source="rest", received_at=0)))
        cs, bad = candles_from_raw(rec)
        assert not bad and len(cs) == len(chunk)
        pipe.feed_batch(cs)
        i += len(chunk)
        k += 1
    return Run(window, plan, delivered, pipe)


def candle_values(run: Run, interval: str) -> dict[int, tuple[Any, ...]]:
    return {t: (*row_values(r), r["revision"] if interval == "1m" else None)
            for t, r in run.pipe.record.closed(SYMBOL, interval).items()}  # fmt: skip


def events_of(run: Run, typ: str) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for e in run.events("1m", typ):
        if typ == "append":
            out.extend((c["open_time"], e["late"]) for c in e["candles"])
        elif typ == "repair":
            out.append((e["candle"]["open_time"], e["revision"], e["candle"]["close"]))
        else:
            out.append((e["from_open_time"], e["to_open_time"], e["missing_bars"]))
    return out


@settings(FAST, max_examples=max(1, FAST.max_examples // 3))
@given(plan=plans(VISION_BARS), sizes=st.lists(st.integers(1, 80), min_size=1, max_size=6))
def test_batch_records_store_and_announce_what_single_records_do(plan: Plan, sizes: list[int]) -> None:
    """Any plan delivered as batch records of any sizes: the same stored candles (1m with their
    revisions, 5m/1h values), the same open gaps, and for 1m the same gap_detected, gap_repaired,
    repairs and appended candles (late or not) in the same order; seqs stay 1..N. Only the
    grouping differs: one append per run of new candles, no partial_close for candles never
    shown in progress."""
    plan = replace(plan, restart=None)
    window = window_of(vision_candles(SYMBOL), plan)
    single, batched = simulate(window, plan), simulate_batched(window, plan, sizes)
    for interval in ("1m", *RESAMPLE):
        assert candle_values(batched, interval) == candle_values(single, interval), interval
        assert [
            (r["from_open_time"], r["to_open_time"])
            for r in batched.pipe.record.open_segments(SYMBOL, interval)
        ] == [
            (r["from_open_time"], r["to_open_time"])
            for r in single.pipe.record.open_segments(SYMBOL, interval)
        ], interval
    for typ in ("gap_detected", "gap_repaired", "repair", "append"):
        assert events_of(batched, typ) == events_of(single, typ), typ
    # a record of one candle is a single kline: its partial_close is the only one
    assert {e["candle"]["open_time"] for e in batched.events("1m", "partial_close")} <= batched.pipe.alone
    check_seqs(batched)
