"""Tier a: the candle state machine on real data, without a broker."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from schemas.events import Append, GapDetected, GapRepaired, PartialClose, PartialUpdate, Repair
from tests.topologies.helpers import DictState, NoRecord, vision_candles, xrp_candles
from topologies.candle_logic import CandleStateMachine

MIN = 60_000


def run(candles: Any, machine: CandleStateMachine | None = None, states: dict[str, DictState] | None = None):
    machine = machine or CandleStateMachine(NoRecord(), lambda: 1_800_000_000_000)
    states = states if states is not None else {}
    out = []
    for c in candles:
        out.extend(machine.apply(c, states.setdefault(c.key, DictState())))
    return out, machine, states


def events(outs: list[dict[str, Any]], typ: str | None = None) -> list[dict[str, Any]]:
    return [o for o in outs if o["kind"] == "event" and (typ is None or o["type"] == typ)]


def test_xrp_dump_detects_exactly_its_two_real_outages() -> None:
    outs, _, _ = run(xrp_candles())
    gaps = events(outs, "gap_detected")
    assert [(g["from_open_time"], g["missing_bars"]) for g in gaps] == [
        (1618883940000 + MIN, 150),  # after 2021-04-20 01:59 UTC
        (1619323260000 + MIN, 283),  # after 2021-04-25 04:01 UTC
    ]
    assert len(events(outs, "append")) == 61_274
    assert events(outs, "repair") == []


def test_sequence_increases_by_one_and_events_match_their_contracts() -> None:
    cs = list(vision_candles()[:50])
    partial = dataclasses.replace(
        cs[10], is_closed=False, close=cs[10].open, high=max(cs[10].open, cs[10].high)
    )
    stream = [*cs[:10], partial, *cs[10:20], *cs[25:]]
    outs, _, _ = run(stream)
    seqs = [e["seq"] for e in events(outs)]
    assert seqs == list(range(1, len(seqs) + 1))
    models = {"partial_update": PartialUpdate, "partial_close": PartialClose, "append": Append,
              "gap_detected": GapDetected, "gap_repaired": GapRepaired, "repair": Repair}  # fmt: skip
    for e in events(outs):
        models[e["type"]].model_validate({k: v for k, v in e.items() if k != "kind"})
    assert len(events(outs, "partial_update")) == 1


def test_identical_duplicate_changes_nothing_and_revision_emits_repair() -> None:
    cs = list(vision_candles()[:5])
    _, machine, states = run(cs)
    again, _, _ = run(cs, machine, states)
    assert again == []
    revised = dataclasses.replace(cs[2], close=cs[2].close + 0.001, high=cs[2].high + 0.001, source="rest")
    rep, _, _ = run([revised], machine, states)
    assert [(e["type"], e["revision"], e["source"]) for e in events(rep)] == [("repair", 1, "rest")]
    rep2, _, _ = run(
        [dataclasses.replace(revised, close=revised.close + 0.001, high=revised.high + 0.001)],
        machine,
        states,
    )
    assert events(rep2)[0]["revision"] == 2


def test_late_fill_shrinks_splits_and_repairs_segments() -> None:
    cs = list(vision_candles()[:12])
    # drop bars 2..8 (7 bars), then fill 5 (split), 2 (shrink left), 8 (shrink right) and the rest
    outs, m, st = run(cs[:2] + cs[9:])
    (gap,) = events(outs, "gap_detected")
    assert (gap["from_open_time"], gap["to_open_time"], gap["missing_bars"]) == (
        cs[2].open_time,
        cs[8].open_time,
        7,
    )
    split, _, _ = run([cs[5]], m, st)
    segs = [o for o in split if o["kind"] == "segment"]
    assert [(s["from_open_time"], s["to_open_time"]) for s in segs] == [
        (cs[2].open_time, cs[4].open_time),
        (cs[6].open_time, cs[8].open_time),
    ]
    assert events(split, "append")[0]["late"] is True
    rest, _, _ = run([cs[2], cs[8], cs[3], cs[4], cs[6], cs[7]], m, st)
    repaired = events(rest, "gap_repaired")
    assert [(r["from_open_time"], r["to_open_time"], r["missing_bars"]) for r in repaired] == [
        # the split at bar 5 hands bar 5 to the left piece: the repaired ranges tile 2..8
        (cs[2].open_time, cs[5].open_time, 4),
        (cs[6].open_time, cs[8].open_time, 3),
    ]
    assert st[cs[0].key].get("meta")["segs"] == []


def test_history_arriving_backwards_extends_first_and_sees_holes() -> None:
    cs = list(vision_candles()[:10])
    outs, _, _ = run([cs[9], cs[8], cs[5], cs[4]])
    gaps = events(outs, "gap_detected")
    assert [(g["from_open_time"], g["to_open_time"]) for g in gaps] == [(cs[6].open_time, cs[7].open_time)]


def test_stale_partial_after_close_is_ignored() -> None:
    c = vision_candles()[0]
    outs, _, _ = run([c, dataclasses.replace(c, is_closed=False)])
    assert [e["type"] for e in events(outs)] == ["partial_close", "append"]


@pytest.mark.parametrize("symbol", ["LINKUSDT", "AVAXUSDT", "NEARUSDT"])
def test_real_vision_months_have_no_gaps(symbol: str) -> None:
    outs, _, _ = run(vision_candles(symbol))
    assert events(outs, "gap_detected") == []
    assert len(events(outs, "append")) == 40_320


class TornRecord(NoRecord):
    """A record left by a crash between the sink's inserts: candles 100..109 stored by a batch
    whose events never were (event_seq above the stored max seq 200), and raw records lost."""

    def __init__(self, cs: list[Any]):
        self.cs = cs

    def seed(self, symbol: str, interval: str) -> dict[str, Any]:
        return {"first_closed": self.cs[0].open_time, "last_closed": self.cs[99].open_time, "seq": 200,
                "segments": [], "torn": [c.open_time for c in self.cs[100:110]]}  # fmt: skip

    def closed_candles(self, symbol: str, interval: str, open_times: list[int], max_seq: int | None = None):
        assert max_seq == 200, "a torn candle is looked up as of the stored max seq"
        return {}  # no version of them was ever announced


def test_torn_candles_never_replayed_are_announced_when_rest_brings_them() -> None:
    """The memory-only broker died with the process, so the torn batch is never replayed: the
    next live candle shows a gap over the torn bars; the orchestrator sends what REST has for it
    (stored or not), and the machine announces the torn candles then, closing the gap, with seqs
    continuing from the stored max."""
    cs = list(vision_candles("NEARUSDT")[:120])
    machine = CandleStateMachine(TornRecord(cs), lambda: 1_800_000_000_000)
    state = DictState()
    out = machine.apply(cs[110], state)
    gap = events(out, "gap_detected")
    assert [(e["from_open_time"], e["to_open_time"], e["seq"]) for e in gap] == [
        (cs[100].open_time, cs[109].open_time, 201)
    ]
    out = machine.apply_many(cs[100:110], state)  # the REST page of the segment
    (append,) = events(out, "append")
    assert append["late"] and [c["open_time"] for c in append["candles"]] == [
        c.open_time for c in cs[100:110]
    ]
    (repaired,) = events(out, "gap_repaired")
    assert repaired["segment_id"] == cs[100].open_time and repaired["missing_bars"] == 10
    assert state.get("meta")["torn"] == []
    assert machine.apply_many(cs[100:110], state) == []  # announced now: a second copy changes nothing
