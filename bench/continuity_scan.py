"""Continuity scan on chDB: milliseconds per symbol-year of 1m candles, against a plain count().

Run: ``.venv/bin/python -m bench.continuity_scan [--rounds N]``. Builds one year of real-shaped 1m
data per symbol in a fresh chDB: XRPUSDT by tiling the real XRP dump (61,274 rows over 42.9
days) with shifted open times, keeping its two real exchange outages in every tile; LINK, AVAX
and NEAR by tiling their real Vision months (no holes). Each year ends at today's midnight UTC;
the scan is ``scan(client, symbol, "1m", now_ms=<that midnight>)``, the default 365-day window
(the path of the scheduler and ``ohlcv scan``) over exactly that year. Rows go in with
clickhouse-connect's Arrow insert (the bulk loader), one insert per tile, as a history import
would leave them.

Measured per symbol, best and median of ``--rounds``: the scan, and a baseline in the same run,
``SELECT count()`` over exactly the rows the scan reads (same WHERE). Twice: on the parts as
inserted, and after ``OPTIMIZE TABLE ... FINAL`` (what background merges converge to).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np

from ohlcv.infra.clickhouse import make_client, migrate
from sinks.clickhouse_bulk import insert_block
from streams.continuity import DAY_MS, scan
from streams.importers import CandleBlock, read_block

REPO = Path(__file__).resolve().parent.parent
XRP = REPO / "data" / "freqtrade" / "binance" / "XRP_USDT-1m.json"
VISION = sorted((REPO / "data" / "binance-vision" / "futures-um" / "1m").glob("*.zip"))
STEP = 60_000
YEAR_BARS = 365 * 1440

_COUNT_SQL = (
    "SELECT count() FROM ohlcv_candles WHERE symbol = {symbol:String} AND interval = '1m' AND is_closed "
    "AND open_time >= fromUnixTimestamp64Milli({lo:Int64}) "
    "AND open_time <= fromUnixTimestamp64Milli({hi:Int64})"
)


def tiles(block: CandleBlock, start_ms: int) -> list[CandleBlock]:
    """``block`` repeated back to back from ``start_ms`` until a year is covered, holes kept."""
    span = int(block.open_time[-1] - block.open_time[0]) // STEP + 1
    out = []
    end = start_ms + YEAR_BARS * STEP
    k = 0
    while start_ms + k * span * STEP < end:
        shift = start_ms + k * span * STEP - int(block.open_time[0])
        moved = dataclasses.replace(
            block, open_time=block.open_time + shift, close_time=block.close_time + shift
        )
        out.append(moved.take(moved.open_time < end))
        k += 1
    return out


def timed(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    ms = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - started) * 1000)
    return min(ms), statistics.median(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    end = int(time.time() * 1000) // DAY_MS * DAY_MS
    start = end - YEAR_BARS * STEP
    sources = {"XRPUSDT": read_block(XRP)} | {p.name.split("-")[0]: read_block(p) for p in VISION}
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}, {platform.machine()}, Python {platform.python_version()}, "
        f"chdb {version('chdb')}, clickhouse-connect {version('clickhouse-connect')}; "
        f"best/median of {args.rounds} rounds"
    )
    with tempfile.TemporaryDirectory(prefix="bench-continuity-") as tmp:
        client = make_client(f"chdb://{tmp}/ch", f"b_{uuid.uuid4().hex[:10]}")
        migrate(client)
        rows = 0
        load_started = time.perf_counter()
        for symbol, block in sources.items():
            for tile in tiles(dataclasses.replace(block, symbol=symbol), start):
                rows += insert_block(client, tile, skip_existing=False)
        load_s = time.perf_counter() - load_started
        print(f"loaded {rows:,} rows ({len(sources)} symbols x 1 year of 1m) in {load_s:.1f}s")
        for symbol in sources:
            r = scan(client, symbol, "1m", now_ms=end)
            print(
                f"  {symbol}: expected {r.expected_bars:,} present {r.present_bars:,} "
                f"gaps {r.gap_count} missing {r.missing_bars:,} largest {r.largest_gap_bars} "
                f"completeness {r.completeness_ratio:.6f}"
            )
        for state in ("as inserted", "after OPTIMIZE FINAL"):
            if state != "as inserted":
                client.command("OPTIMIZE TABLE ohlcv_candles FINAL")
            parts = client.query(
                "SELECT count() FROM system.parts WHERE database = currentDatabase() "
                "AND table = 'ohlcv_candles' AND active"
            ).result_rows[0][0]
            scans, counts = [], []
            for symbol in sources:
                r = scan(client, symbol, "1m", now_ms=end)
                lo, hi = r.first_open_time, r.last_open_time

                def one_scan(symbol: str = symbol) -> object:
                    return scan(client, symbol, "1m", now_ms=end)

                def one_count(symbol: str = symbol, lo: int | None = lo, hi: int | None = hi) -> object:
                    return client.query(_COUNT_SQL, parameters={"symbol": symbol, "lo": lo, "hi": hi})

                timed(one_scan, 2)  # warm caches
                scans.append(timed(one_scan, args.rounds))
                counts.append(timed(one_count, args.rounds))
            s_best = float(np.median([b for b, _ in scans]))
            s_med = float(np.median([m for _, m in scans]))
            c_best = float(np.median([b for b, _ in counts]))
            c_med = float(np.median([m for _, m in counts]))
            print(
                f"{state} ({parts} parts): scan {s_best:.1f} ms best / {s_med:.1f} ms median "
                f"per symbol-year; baseline count() {c_best:.1f} / {c_med:.1f} ms; "
                f"scan/count {s_med / c_med:.1f}x"
            )
            for symbol, (b, m) in zip(sources, scans, strict=True):
                print(f"  {symbol}: scan {b:.1f} / {m:.1f} ms")
        client.close()


if __name__ == "__main__":
    main()
