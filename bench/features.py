"""Microseconds per closed candle of the streaming features (topologies.feature_logic).

On the real XRP 1m dump: new candles with the state in memory (the topology decodes state once
per checkpoint), the same with the state round-tripped through JSON every 1000 candles (a
checkpoint's worth), a repair 40 bars back (41 rows re-derived), a backfill page of 500 late
fills closing a hole (``apply_many``: the page and the 1500 bars after it, one pass) and the batch
reference over the whole dump, for scale. Best of three rounds.
"""

from __future__ import annotations

import dataclasses
import json
import timeit

import orjson

from indicators.batch import features
from schemas.klines import Candle
from tests.indicators.helpers import frame
from tests.topologies.helpers import PlainState, xrp_candles
from topologies.feature_logic import FeatureStream


def _run(cs: tuple[Candle, ...], checkpoint: int | None) -> None:
    fs, st = FeatureStream(), PlainState()
    for i, c in enumerate(cs):
        fs.apply(c, "new", st)
        if checkpoint and i % checkpoint == 0:
            st.d = orjson.loads(orjson.dumps(st.d))


def main() -> None:
    cs = xrp_candles()
    new_us = min(timeit.repeat(lambda: _run(cs, None), number=1, repeat=3)) / len(cs) * 1e6
    ckpt_us = min(timeit.repeat(lambda: _run(cs, 1000), number=1, repeat=3)) / len(cs) * 1e6
    fs, st = FeatureStream(), PlainState()
    for c in cs[:2000]:
        fs.apply(c, "new", st)
    state = orjson.dumps(st.d)
    target = cs[1959]
    bumped = [dataclasses.replace(target, close=target.close * (1 + k * 1e-6)) for k in range(1, 201)]

    def repairs() -> None:
        for b in bumped:
            fs.apply(b, "repair", st)

    repair_us = min(timeit.repeat(repairs, number=1, repeat=3)) / len(bumped) * 1e6

    # a backfill page: 500 held-back bars delivered as one batch record of late fills
    page_lo = 1000
    held = cs[page_lo : page_lo + 500]
    kept = cs[:page_lo] + cs[page_lo + 500 : 3000]

    def backfill() -> tuple[float, int]:
        fs, st = FeatureStream(ring_bars=3000), PlainState()
        for c in kept:
            fs.apply(c, "new", st)
        t0 = timeit.default_timer()
        rows = fs.apply_many(held, ["late_fill"] * len(held), st)
        assert isinstance(rows, list)
        return timeit.default_timer() - t0, len(rows)

    page_s, page_rows = min(backfill() for _ in range(3))
    df = frame(cs)
    batch_s = min(timeit.repeat(lambda: features(df, 60_000), number=1, repeat=3))
    print(json.dumps({
        "candles": len(cs),
        "new_candle_us": round(new_us, 2),
        "new_candle_rows_per_s": round(1e6 / new_us),
        "new_candle_with_json_state_per_1000_us": round(ckpt_us, 2),
        "state_bytes_json": len(state),
        "repair_40_bars_back_us": round(repair_us, 1),
        "backfill_page_500_late_fills_ms": round(page_s * 1e3, 1),
        "backfill_page_rows": page_rows,
        "batch_reference_rows_per_s": round(len(cs) / batch_s),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
