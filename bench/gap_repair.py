"""Gap detection → repair time, through the whole path.

Run: ``.venv/bin/python -m bench.gap_repair``. Prints one JSON object.

Setup: an embedded broker, chDB, the fake Binance serving a real Vision month (LINKUSDT USDT-M
1m) over its REST protocol. The month's first 3,000 candles are replayed to the raw topic with
ranges of 1, 7, 60, 150 and 500 bars dropped; the candle topology (main thread) detects each
gap, and the gap orchestrator (a thread) fetches the missing bars from REST and sends them
through Kafka, where the topology fills the segments. Twice: on the event path (the
orchestrator reacts to each ``gap_detected`` event; its ClickHouse poll, every 60 s, never comes)
and on the poll path it had before (no events, a 1 s poll of the ClickHouse queue, which sees a
segment only after the topology's checkpoint stored it).

Per gap: ``detected_at`` (the topology saw the gap) to ``repaired_at`` (the topology saw its
last missing bar), both from ``gap_segments``, and detection to the attempt's start
(``backfill_runs.started_at``). Baseline, same run: the REST fetch of the same ranges alone,
with the orchestrator's client.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.api_bench import pct
from fakes.binance import Datasets, FakeBinance, load_vision_zip
from ohlcv.infra.broker import EmbeddedBroker
from ohlcv.infra.clickhouse import make_client, migrate
from schemas.klines import Candle
from streams.backfill import BackfillConfig, Orchestrator, backfill_runs, segment_lifecycle
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


def measure(data: Datasets, kept: list[Candle], tmp: Path, *, events: bool) -> dict[str, Any]:
    """One run: the topology and the orchestrator over ``kept``; per gap, detection -> repair and
    detection -> the attempt's start. ``events``: the orchestrator reacts to gap_detected (its
    ClickHouse poll every 60 s never comes); else it finds the gaps by its 1 s poll (the path
    before the events)."""
    # one chDB path per process: each run has a database of its own
    url, db = f"chdb://{tmp / 'ch'}", "bench_events" if events else "bench_poll"
    migrate(make_client(url, db))
    with EmbeddedBroker() as broker, FakeBinance(data) as fake:
        topics = unique_topics(broker.address, f"gap{uuid.uuid4().hex[:6]}.")
        replay_to_kafka(broker.address, kept, topic=topics["raw"], source="import", market="usdm")
        cfg = BackfillConfig(default_market="usdm", raw_topic=topics["raw"], queue_topic=topics["gap_queue"],
                             events_topic=topics["events"] if events else None,
                             poll_interval_s=60.0 if events else 1.0)  # fmt: skip
        orch = Orchestrator(make_client(url, db), rest_urls={"usdm": fake.urls.usdm_rest},
                            broker_address=broker.address, config=cfg)  # fmt: skip
        stop = threading.Event()
        thread = threading.Thread(target=orch.run, args=(stop,), name="orchestrator")
        thread.start()
        deadline = time.monotonic() + 20
        while events and not (orch.consumer is not None and orch.consumer.ready.is_set()):
            assert time.monotonic() < deadline, "the trigger consumer did not get its partitions"
            time.sleep(0.05)
        try:
            # returns once the raw topic has been quiet for 6 s: every repair has gone through
            run_topology(broker.address, topics, url, db, tmp / db, resample=(), idle_timeout_s=6)
        finally:
            stop.set()
            thread.join(30)
        client = make_client(url, db)
        segs = segment_lifecycle(client, SYMBOL, "1m")
        started = {r.segment_id: r.started_at for r in backfill_runs(client, SYMBOL, "1m")}
    repaired = [s for s in segs if s.state == "repaired" and s.repaired_at is not None]
    assert len(repaired) == len(DROPPED), f"{len(repaired)} of {len(DROPPED)} gaps repaired: {segs}"
    mttr = [((s.repaired_at or 0) - s.detected_at) / 1000 for s in repaired]
    to_dispatch = [(started[s.segment_id] - s.detected_at) / 1000 for s in repaired]
    return {
        "detection_to_repair_s": {
            "per_gap": {f"{b - a} bars": round(m, 2) for m, (a, b) in zip(mttr, DROPPED, strict=True)},
            "p50": round(pct(mttr, 0.5), 2), "max": round(max(mttr), 2),
        },
        "detection_to_attempt_start_s": {"p50": round(pct(to_dispatch, 0.5), 3),
                                         "max": round(max(to_dispatch), 3)},
        "attempts_started_by": dict(Counter(orch.dispatched_by.values())),
    }  # fmt: skip


def main() -> None:
    data = Datasets([load_vision_zip(MONTH)])
    source = list(vision_candles(SYMBOL))[:N]  # the same month, as candles
    kept = [c for i, c in enumerate(source) if not any(a <= i < b for a, b in DROPPED)]
    tmp = Path(tempfile.mkdtemp())
    event_path = measure(data, kept, tmp, events=True)
    poll_path = measure(data, kept, tmp, events=False)
    baseline = []
    with FakeBinance(data) as fake, BinanceRestClient(fake.urls.usdm_rest, "usdm") as rest:
        for a, b in DROPPED:
            t0 = time.perf_counter()
            got = rest.klines(SYMBOL, "1m", source[a].open_time, source[b - 1].open_time)
            baseline.append((time.perf_counter() - t0) * 1000)
            assert len(got) == b - a, f"REST served {len(got)} of {b - a} bars"
    print(json.dumps({
        "benchmark": "gap_repair", "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus", "python": platform.python_version(),
        "versions": {p: version(p) for p in ("quixstreams", "confluent-kafka", "chdb", "httpx")},
        "setup": f"{N:,} real LINKUSDT 1m candles, gaps of {[b - a for a, b in DROPPED]} bars; "
                 "topology checkpoint every 1 s",
        "event_path": {"how": "attempt started on the gap_detected event; ClickHouse poll every 60 s",
                       **event_path},
        "poll_path": {"how": "no events: attempt started by the 1 s ClickHouse poll (the path before)",
                      **poll_path},
        "baseline_rest_fetch_ms": {f"{b - a} bars": round(ms, 1)
                                   for (a, b), ms in zip(DROPPED, baseline, strict=True)},
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
