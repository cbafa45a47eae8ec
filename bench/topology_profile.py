"""Where one kline's time goes in the candle topology: microseconds per kline of each step.

Run: ``.venv/bin/python -m bench.topology_profile [--klines N] [--batch B] [--resample 5m,1h]``.
Same set-up as ``bench.topology`` (real 1m klines, embedded broker, chDB sink); each step of the
topology is wrapped in a timer (the wrappers cost ~0.3 µs a call, counted in the steps), and the
run prints the rate and the time per kline of decode, the stateful step, publish, the sink's
per-record add, and its per-checkpoint flush split into its parts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

import sinks.clickhouse as sink_module
import topologies.candles as candles_module
import topologies.state_cache as state_module
from bench.topology import CHDB_DIR, _candles
from ohlcv.infra.broker import EmbeddedBroker
from ohlcv.infra.clickhouse import make_client, migrate
from tests.topologies.pipeline import produce, unique_topics
from topologies.runner import TopologyConfig, build_application, tune_gc

TIMES: dict[str, float] = {}


def timed(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            TIMES[name] = TIMES.get(name, 0.0) + time.perf_counter() - t

    return wrapper


def _instrument() -> None:
    candles_module.decode_record = timed("decode", candles_module.decode_record)
    make_step = candles_module.make_step
    candles_module.make_step = lambda *a, **k: timed("step", make_step(*a, **k))
    candles_module.Publisher.__call__ = timed("publish", candles_module.Publisher.__call__)  # type: ignore[method-assign]
    sink = sink_module.ClickHouseCandleSink
    sink.add = timed("sink add", sink.add)  # type: ignore[method-assign]
    sink.flush = timed("sink flush (all below)", sink.flush)  # type: ignore[method-assign]
    state_module.CheckpointStates.flush = timed("  state write-back", state_module.CheckpointStates.flush)  # type: ignore[method-assign]
    sink_module.Rows.add = timed("  rows from outputs", sink_module.Rows.add)  # type: ignore[method-assign]
    sink_module.Rows.candle_table = timed("  candle Arrow table", sink_module.Rows.candle_table)  # type: ignore[method-assign]
    sink_module.Rows.event_table = timed("  event Arrow table", sink_module.Rows.event_table)  # type: ignore[method-assign]
    insert_arrow = Client.insert_arrow

    def timed_insert(self: Client, table: str, *a: Any, **k: Any) -> Any:
        return timed(f"  chDB insert {table}", insert_arrow)(self, table, *a, **k)

    Client.insert_arrow = timed_insert  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--klines", type=int, default=30_000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--resample", default="")
    args = ap.parse_args()
    resample = tuple(iv for iv in args.resample.split(",") if iv)
    n = args.klines
    _instrument()
    with EmbeddedBroker() as broker:
        topics = unique_topics(broker.address, f"prof{uuid.uuid4().hex[:6]}.")
        produce(broker.address, topics["raw"], _candles(n), batch=args.batch)
        url, db = f"chdb://{CHDB_DIR}", f"prof_{uuid.uuid4().hex[:6]}"
        migrate(make_client(url, db))
        cfg = TopologyConfig(
            broker_address=broker.address, clickhouse_url=url, clickhouse_database=db,
            consumer_group=f"p-{uuid.uuid4().hex[:6]}", state_dir=Path(tempfile.mkdtemp()) / "state",
            resample_intervals=resample, raw_topic=topics["raw"], events_topic=topics["events"],
            deadletter_topic=topics["dead"],
        )  # fmt: skip
        app = build_application(cfg)
        tune_gc()
        span: dict[str, float] = {}

        def on_processed(topic: str, partition: int, offset: int) -> None:
            span["last"] = time.perf_counter()
            span.setdefault("first", span["last"])

        app._on_message_processed = on_processed
        app.run(timeout=5)
    elapsed = span["last"] - span["first"]
    shape = "1 kline/record" if args.batch == 1 else f"{args.batch} klines/record"
    print(f"# {n:,} klines, {shape}, resample {','.join(resample) or 'off'}: {n / elapsed:,.0f} klines/s")
    print(f"{'step':<34} µs/kline")
    for name, total in TIMES.items():
        print(f"{name:<34} {total / n * 1e6:8.2f}")
    print(f"{'whole loop (1 / rate)':<34} {elapsed / n * 1e6:8.2f}")


if __name__ == "__main__":
    main()
