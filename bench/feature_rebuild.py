"""``ohlcv features rebuild`` of a year of bulk-loaded 1m history: bars/s from the first read to
the last write, and a second run (nothing to write: read, derive, compare).

Run: ``.venv/bin/python -m bench.feature_rebuild``. Prints one JSON object.

The year: the real XRP 1m dump (61,274 bars with its two real outages) laid end to end in time
(``bench.features_topology.year_of_candles``, 525,600 bars), bulk-loaded into a fresh chDB.
Baseline, same run: the batch reference (``indicators.batch``, pandas) over the same candles,
in memory (no reads, no writes).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from importlib.metadata import version

from bench.features_topology import year_of_candles
from indicators.batch import features
from ohlcv.infra.clickhouse import make_client, migrate
from sinks.clickhouse_bulk import insert_candles
from tests.indicators.helpers import frame
from topologies.feature_rebuild import rebuild_features

MIN = 60_000


def main() -> None:
    candles = year_of_candles()
    with tempfile.TemporaryDirectory() as d:
        client = make_client(f"chdb://{d}/ch", "bench")
        migrate(client)
        insert_candles(client, candles)
        first = rebuild_features(client, "XRPUSDT", "1m")
        second = rebuild_features(client, "XRPUSDT", "1m")
        client.close()
    df = frame(candles)
    t0 = time.perf_counter()
    features(df, MIN)
    batch_s = time.perf_counter() - t0
    n = len(candles)

    def run(seconds: float, written: int) -> dict[str, float | int]:
        return {"seconds": round(seconds, 2), "bars_per_s": round(n / seconds), "written": written}

    out = {
        "bars": n,
        "first_run": run(first.seconds, first.written),
        "second_run": run(second.seconds, second.written),
        "baseline_batch_reference_in_memory": run(batch_s, 0),
        "env": f"{platform.python_version()}, chdb {version('chdb')}",
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
