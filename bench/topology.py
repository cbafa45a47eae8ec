"""Topology throughput vs the raw consume rate of the same broker, in the same run.

Run: ``.venv/bin/python -m bench.topology [--klines N] [--single-klines M]``. Produces real 1m
klines (the XRP dump, repeated under shifted open times when N exceeds it) to a fresh raw topic
on an embedded broker, then measures:

1. the ceiling: a plain confluent-kafka consumer reading the same records (batch consume);
2. the candle topology (Quix Streams, state, events topic, ClickHouse sink into chDB), without
   resampling, from the first consumed record to the last processed one (group join excluded);
3. the same with resampling to 5m and 1h;

4. for the one-record-per-kline shape, the framework's floor: a Quix application whose only
   step is a stateful no-op (one state write per record), over the same records;

each for two shapes of the raw topic: M klines one record each (the websocket's shape) and N
klines in batch records of ``--batch`` (what REST repairs, imports and bulk replays send). A run
spans several checkpoints (one ClickHouse write per second): a run of one or two would measure
the first and the last checkpoint rather than the rate.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer
from quixstreams import Application, State

from ohlcv.infra.broker import EMBEDDED_CONSUMER_CONFIG, EmbeddedBroker
from ohlcv.infra.clickhouse import make_client, migrate
from sinks.clickhouse import Rows
from tests.topologies.helpers import xrp_candles
from tests.topologies.pipeline import produce, unique_topics
from topologies.runner import TopologyConfig, build_application, tune_gc


def _candles(n: int) -> list:  # type: ignore[type-arg]
    from dataclasses import replace

    base = list(xrp_candles())
    span = base[-1].open_time - base[0].open_time + 60_000
    out = []
    k = 0
    while len(out) < n:
        out.extend(
            replace(c, open_time=c.open_time + k * span, close_time=c.close_time + k * span) for c in base
        )
        k += 1
    return out[:n]


def raw_consume(address: str, topic: str, n: int, records: int) -> float:
    """Klines/s a plain consumer reads and JSON-decodes (``records`` messages carrying ``n``
    klines): the least any consumer of the raw topic does, so the ceiling for the topology."""
    c = Consumer({"bootstrap.servers": address, "group.id": f"b-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", **EMBEDDED_CONSUMER_CONFIG})  # fmt: skip
    c.subscribe([topic])
    got = klines = 0
    t0 = None
    while got < records:
        msgs = c.consume(5000, 1.0)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        for m in msgs:
            if not m.error():
                got += 1
                value = orjson.loads(m.value())
                klines += len(value["klines"]) if "klines" in value else 1
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    assert klines == n, f"read {klines} of {n} klines"
    return n / elapsed


CHDB_DIR = tempfile.mkdtemp()  # chDB: one data path per process; a database per measurement


def topology(address: str, topics: dict[str, str], n: int, resample: tuple[str, ...]) -> float:
    d = tempfile.mkdtemp()
    url, db = f"chdb://{CHDB_DIR}", f"bench_{uuid.uuid4().hex[:6]}"
    migrate(make_client(url, db))
    cfg = TopologyConfig(
        broker_address=address, clickhouse_url=url, clickhouse_database=db,
        consumer_group=f"t-{uuid.uuid4().hex[:6]}", state_dir=Path(d) / "state", embedded_broker=True,
        resample_intervals=resample, raw_topic=topics["raw"], events_topic=topics["events"],
        deadletter_topic=topics["dead"],
    )  # fmt: skip
    app = build_application(cfg)
    tune_gc()  # as the services that run it do
    first: list[float] = []
    last: list[float] = []

    def on_processed(topic: str, partition: int, offset: int) -> None:
        now = time.perf_counter()
        if not first:
            first.append(now)
        last[:] = [now]

    app._on_message_processed = on_processed  # the public hook is a constructor argument
    write = Rows.write

    def timed_write(self: Rows, client: Any) -> None:
        write(self, client)
        last[:] = [time.perf_counter()]  # the end is the last ClickHouse write, not the last message

    Rows.write = timed_write  # type: ignore[method-assign]
    try:
        app.run(timeout=5)
    finally:
        Rows.write = write  # type: ignore[method-assign]
    client = make_client(url, db)
    stored = client.query("SELECT count() FROM ohlcv_candles FINAL WHERE interval = '1m'").result_rows[0][0]
    assert stored == n, f"topology stored {stored} of {n}"
    return n / (last[0] - first[0])


def quix_floor(address: str, topic: str, n: int) -> float:
    """Records/s of a Quix application doing nothing but a stateful no-op per record."""
    app = Application(
        broker_address=address, consumer_group=f"f-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(), use_changelog_topics=False, consumer_poll_timeout=0.1,
        consumer_extra_config=dict(EMBEDDED_CONSUMER_CONFIG), loglevel="WARNING",
    )  # fmt: skip
    seen: list[float] = []

    def touch(value: bytes, state: State[Any, Any]) -> bytes:
        state.set("n", 1)
        seen.append(time.perf_counter())
        return value

    app.dataframe(app.topic(topic, key_deserializer="str", value_deserializer="bytes")).apply(
        touch, stateful=True
    )
    app.run(count=n, timeout=5)
    assert len(seen) == n, f"the no-op app saw {len(seen)} of {n} records"
    return n / (seen[-1] - seen[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--klines", type=int, default=300_000, help="klines of the batch-record runs")
    ap.add_argument("--single-klines", type=int, default=60_000, help="klines of the one-per-record runs")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each batch-record measurement (median)")
    args = ap.parse_args()
    size = args.batch
    with EmbeddedBroker() as broker:
        results = []
        for batch, n in ((1, args.single_klines), (size, args.klines)):
            candles = _candles(n)
            for resample in ((), ("5m", "1h")):
                runs = []
                for _ in range(1 if batch == 1 else args.repeat):
                    topics = unique_topics(broker.address, f"bench{uuid.uuid4().hex[:6]}.")
                    produce(broker.address, topics["raw"], candles, batch=batch)
                    records = -(-n // batch)
                    ceiling = raw_consume(broker.address, topics["raw"], n, records)
                    runs.append((topology(broker.address, topics, n, resample), ceiling))
                results.append((n, batch, resample, sorted(runs)))
            if batch == 1:
                floor = quix_floor(broker.address, topics["raw"], n)
    print(f"# topology benchmark {datetime.now(UTC):%Y-%m-%d %H:%M UTC}, {platform.machine()}, "
          f"{platform.python_version()}, quixstreams {version('quixstreams')}, "
          f"confluent-kafka {version('confluent-kafka')}, chdb {version('chdb')}")  # fmt: skip
    print("# real 1m klines (XRP/USDT dump), embedded Tansu broker, 3 partitions, chDB sink")
    for n, batch, resample, runs in results:
        rate, ceiling = runs[len(runs) // 2]  # the median run, with its own ceiling
        shape = f"{n:,} klines, " + ("1 kline/record" if batch == 1 else f"{batch} klines/record")
        label = f"topology, {shape}, resample " + (",".join(resample) if resample else "off")
        spread = (
            f"   (median of {len(runs)}: {' / '.join(f'{r:,.0f}' for r, _ in runs)})" if len(runs) > 1 else ""
        )
        print(f"raw consume + JSON decode, {shape} (ceiling, same run) {ceiling:>10,.0f} klines/s")
        print(f"{label:<64} {rate:>10,.0f} klines/s   ratio {rate / ceiling:.3f}{spread}")
    print(f"{'Quix floor: stateful no-op, same 1-kline records':<64} {floor:>10,.0f} records/s")


if __name__ == "__main__":
    main()
