"""Bulk import into chDB: candles per second from Vision zips and the freqtrade dump.

Run: ``.venv/bin/python -m bench.bulk_import [--rounds N]``. Each round loads the three bundled
Vision zips (3 x 40,320 rows) into a fresh database, so nothing is skipped as already present;
the figure is end to end (unzip, parse, validate, insert). Also measured, for comparison:
reading alone, inserting alone (Arrow, the shipped transport, vs Native from numpy columns),
the candle-object path and a re-import (everything skipped). Prints one line per figure;
best and median of the rounds, since other processes share this machine's two cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np

from ohlcv.infra.clickhouse import make_client, migrate
from sinks.clickhouse_bulk import COLUMNS, TABLE, block_to_arrow, insert_block, insert_candles, load_files
from streams.importers import CandleBlock, read_block, read_vision

REPO = Path(__file__).resolve().parent.parent
VISION = sorted((REPO / "data" / "binance-vision" / "futures-um" / "1m").glob("*.zip"))
XRP = REPO / "data" / "freqtrade" / "binance" / "XRP_USDT-1m.json"


def _native_insert(client: object, block: CandleBlock) -> None:
    """The Native-format alternative: numpy columns through client.insert (for comparison)."""
    n = len(block)
    now = int(time.time() * 1000)
    ctx = client.create_insert_context(TABLE, list(COLUMNS), column_oriented=True)  # type: ignore[attr-defined]
    ctx.col_simple_formats = {c: "int" for c in ("open_time", "close_time", "event_time", "ingested_at")}
    ctx.data = [
        [block.symbol] * n,
        [block.interval] * n,
        block.open_time,
        block.close_time,
        block.open,
        block.high,
        block.low,
        block.close,
        block.volume,
        block.quote_volume,
        block.trades.astype(np.uint64),
        block.taker_buy_base,
        block.taker_buy_quote,
        np.ones(n, dtype=bool),
        ["import"] * n,
        [None] * n,
        np.zeros(n, dtype=np.uint32),
        np.ones(n, dtype=np.uint64),
        block.close_time,
        np.full(n, now, dtype=np.int64),
    ]
    client.insert(context=ctx, settings={"optimize_on_insert": 0})  # type: ignore[attr-defined]


def _rounds(
    n_rounds: int, rows: int, fn: Callable[[object], None], setup: Callable[[], object] = lambda: None
) -> tuple[float, float]:
    """Best and median rows/s of ``fn(setup())``; only ``fn`` is timed."""
    rates = []
    for _ in range(n_rounds):
        arg = setup()
        started = time.perf_counter()
        fn(arg)
        rates.append(rows / (time.perf_counter() - started))
    return max(rates), statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n_rounds = args.rounds
    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp:
        url = f"chdb://{tmp}/ch"

        def fresh() -> object:
            client = make_client(url, f"b_{uuid.uuid4().hex[:10]}")
            migrate(client)
            return client

        warm = fresh()
        load_files(warm, VISION[:1])  # type: ignore[arg-type]
        blocks = [read_block(p) for p in VISION]
        rows = sum(len(b) for b in blocks)
        figures: list[tuple[str, float, float]] = []

        def end_to_end(client: object) -> None:
            load_files(client, VISION)  # type: ignore[arg-type]

        figures.append(
            ("vision zips -> chDB, end to end (shipped path)", *_rounds(n_rounds, rows, end_to_end, fresh))
        )

        def read_only(_: object) -> None:
            for p in VISION:
                read_block(p)

        figures.append(("  read only: unzip + pyarrow parse + checks", *_rounds(n_rounds, rows, read_only)))

        def arrow_only(client: object) -> None:
            for b in blocks:
                insert_block(client, b, skip_existing=False)  # type: ignore[arg-type]

        figures.append(("  insert only: Arrow (shipped)", *_rounds(n_rounds, rows, arrow_only, fresh)))

        def native_only(client: object) -> None:
            for b in blocks:
                _native_insert(client, b)

        figures.append(("  insert only: Native from numpy", *_rounds(n_rounds, rows, native_only, fresh)))

        def arrow_build(_: object) -> None:
            for b in blocks:
                block_to_arrow(b, ingested_at_ms=0)

        figures.append(("  Arrow table build only", *_rounds(n_rounds, rows, arrow_build)))

        reimport_client = fresh()
        load_files(reimport_client, VISION)  # type: ignore[arg-type]

        def reimport(_: object) -> None:
            load_files(reimport_client, VISION)  # type: ignore[arg-type]

        figures.append(("re-import of the same zips (all skipped)", *_rounds(n_rounds, rows, reimport)))

        def candle_objects(client: object) -> None:
            for p in VISION:
                insert_candles(client, read_vision(p))  # type: ignore[arg-type]

        figures.append(
            (
                "vision zips via Candle objects (replay reader)",
                *_rounds(max(1, n_rounds // 2), rows, candle_objects, fresh),
            )
        )

        xrp_rows = len(read_block(XRP))

        def freqtrade(client: object) -> None:
            load_files(client, [XRP])  # type: ignore[arg-type]

        figures.append(
            ("freqtrade XRP json -> chDB", *_rounds(max(1, n_rounds // 2), xrp_rows, freqtrade, fresh))
        )

    print(f"# bulk import benchmark {datetime.now(UTC):%Y-%m-%d %H:%M UTC}")
    print(
        f"# machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}, "
        f"chdb {version('chdb')}, clickhouse-connect {version('clickhouse-connect')}, "
        f"pyarrow {version('pyarrow')}, numpy {version('numpy')}, load avg {os.getloadavg()[0]:.2f}"
    )
    print(f"# {rows:,} vision rows per round, {n_rounds} rounds; candles/s best / median")
    for name, best, median in figures:
        print(f"{name:<52} {best:>12,.0f} {median:>12,.0f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
