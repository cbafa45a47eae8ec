"""Gap detection → repair time, through the whole path.

Run: ``.venv/bin/python -m bench.gap_repair``. Prints one JSON object.

Setup: an embedded broker, chDB, the fake Binance serving a real Vision month (LINKUSDT USDT-M
1m) over its REST protocol. The month's first 3,000 candles are replayed to the raw topic with
ranges of 1, 7, 60, 150 and 500 bars dropped; the candle topology (main thread) detects each
gap, and the continuity orchestrator (a thread, default settings: 1 s polling) fetches the
missing bars from REST and sends them through Kafka, where the topology fills the segments.

Per gap: ``detected_at`` (the topology saw the gap) to ``repaired_at`` (the topology saw its
last missing bar), both from ``gap_segments``. Baseline, same run: the REST fetch of the same
ranges alone, with the orchestrator's client.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from bench.api_bench import pct
from fakes.binance import Datasets, FakeBinance, load_vision_zip
from ohlcv.infra.broker import EmbeddedBroker
from ohlcv.infra.clickhouse import make_client, migrate
from streams.backfill import BackfillConfig, Orchestrator, segment_lifecycle
from streams.binance_rest import BinanceRestClient
from streams.replay import replay_to_kafka
from tests.conftest import DATA
from tests.topologies.helpers import vision_candles
from tests.topologies.pipeline import run_topology, unique_topics

SYMBOL = "LINKUSDT"
MONTH = DATA / "binance-vision" / "futures-um" / "1m" / "LINKUSDT-1m-2026-02.zip"
#: candle index ranges [a, b) lost on our side: 1, 7, 60, 150 and 500 bars
DROPPED = [(200, 201), (400, 407), (800, 860), (1200, 1350), (2000, 2500)]
N = 3000


def main() -> None:
    data = Datasets([load_vision_zip(MONTH)])
    source = list(vision_candles(SYMBOL))[:N]  # the same month, as candles
    kept = [c for i, c in enumerate(source) if not any(a <= i < b for a, b in DROPPED)]
    tmp = Path(tempfile.mkdtemp())
    url, db = f"chdb://{tmp / 'ch'}", "bench"
    migrate(make_client(url, db))
    with EmbeddedBroker() as broker, FakeBinance(data) as fake:
        topics = unique_topics(broker.address, f"gap{uuid.uuid4().hex[:6]}.")
        replay_to_kafka(broker.address, kept, topic=topics["raw"], source="import", market="usdm")
        orch = Orchestrator(
            make_client(url, db), rest_urls={"usdm": fake.urls.usdm_rest}, broker_address=broker.address,
            config=BackfillConfig(default_market="usdm", raw_topic=topics["raw"]),
        )  # fmt: skip
        stop = threading.Event()
        thread = threading.Thread(target=orch.run, args=(stop,), name="orchestrator")
        thread.start()
        try:
            # returns once the raw topic has been quiet for 6 s: every repair has gone through
            run_topology(broker.address, topics, url, db, tmp / "state", resample=(), idle_timeout_s=6)
        finally:
            stop.set()
            thread.join(30)
        segs = segment_lifecycle(make_client(url, db), SYMBOL, "1m")
        baseline = []
        with BinanceRestClient(fake.urls.usdm_rest, "usdm") as rest:
            for a, b in DROPPED:
                t0 = time.perf_counter()
                got = rest.klines(SYMBOL, "1m", source[a].open_time, source[b - 1].open_time)
                baseline.append((time.perf_counter() - t0) * 1000)
                assert len(got) == b - a, f"REST served {len(got)} of {b - a} bars"
    repaired = [s for s in segs if s.state == "repaired" and s.repaired_at is not None]
    assert len(repaired) == len(DROPPED), f"{len(repaired)} of {len(DROPPED)} gaps repaired: {segs}"
    mttr = [((s.repaired_at or 0) - s.detected_at) / 1000 for s in repaired]
    print(json.dumps({
        "benchmark": "gap_repair", "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus", "python": platform.python_version(),
        "versions": {p: version(p) for p in ("quixstreams", "confluent-kafka", "chdb", "httpx")},
        "setup": f"{N:,} real LINKUSDT 1m candles, gaps of {[b - a for a, b in DROPPED]} bars; "
                 "orchestrator polling every 1 s, topology checkpoint every 1 s",
        "detection_to_repair_s": {
            "per_gap": {f"{b - a} bars": round(m, 2) for m, (a, b) in zip(mttr, DROPPED, strict=True)},
            "p50": round(pct(mttr, 0.5), 2), "max": round(max(mttr), 2),
        },
        "baseline_rest_fetch_ms": {f"{b - a} bars": round(ms, 1)
                                   for (a, b), ms in zip(DROPPED, baseline, strict=True)},
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
