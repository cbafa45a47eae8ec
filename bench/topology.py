"""Topology throughput vs the raw consume rate of the same broker, in the same run.

Run: ``.venv/bin/python -m bench.topology [--klines N]``. Produces N real 1m klines (the XRP
dump, repeated under shifted open times when N exceeds it) to a fresh raw topic on an embedded
broker, then measures:

1. the ceiling: a plain confluent-kafka consumer reading the N records (batch consume);
2. the candle topology (Quix Streams, state, events topic, ClickHouse sink into chDB), without
   resampling, from the first consumed record to the last sink write (group join excluded);
3. the same with resampling to 5m and 1h (each 1m kline then makes ~3 more messages).
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

from confluent_kafka import Consumer

from ohlcv.infra.broker import EMBEDDED_CONSUMER_CONFIG, EmbeddedBroker
from ohlcv.infra.clickhouse import make_client, migrate
from tests.topologies.helpers import xrp_candles
from tests.topologies.pipeline import produce, unique_topics
from topologies.runner import TopologyConfig, build_application


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


def raw_consume(address: str, topic: str, n: int) -> float:
    c = Consumer({"bootstrap.servers": address, "group.id": f"b-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", **EMBEDDED_CONSUMER_CONFIG})  # fmt: skip
    c.subscribe([topic])
    got, t0 = 0, None
    while got < n:
        msgs = c.consume(5000, 1.0)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        got += sum(1 for m in msgs if not m.error())
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
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
    first: list[float] = []
    last: list[float] = []

    def on_processed(topic: str, partition: int, offset: int) -> None:
        now = time.perf_counter()
        if not first:
            first.append(now)
        last[:] = [now]

    app._on_message_processed = on_processed  # the public hook is a constructor argument
    app.run(timeout=5)
    client = make_client(url, db)
    stored = client.query("SELECT count() FROM ohlcv_candles FINAL WHERE interval = '1m'").result_rows[0][0]
    assert stored == n, f"topology stored {stored} of {n}"
    return n / (last[0] - first[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--klines", type=int, default=30_000)
    n = ap.parse_args().klines
    candles = _candles(n)
    with EmbeddedBroker() as broker:
        results = []
        for resample in ((), ("5m", "1h")):
            topics = unique_topics(broker.address, f"bench{uuid.uuid4().hex[:6]}.")
            produce(broker.address, topics["raw"], candles)
            ceiling = raw_consume(broker.address, topics["raw"], n)
            rate = topology(broker.address, topics, n, resample)
            results.append((resample, ceiling, rate))
    print(f"# topology benchmark {datetime.now(UTC):%Y-%m-%d %H:%M UTC}, {platform.machine()}, "
          f"{platform.python_version()}, quixstreams {version('quixstreams')}, "
          f"confluent-kafka {version('confluent-kafka')}, chdb {version('chdb')}")  # fmt: skip
    print(f"# {n:,} real 1m klines (XRP/USDT dump), embedded Tansu broker, 3 partitions, chDB sink")
    for resample, ceiling, rate in results:
        label = "topology, resample " + (",".join(resample) if resample else "off")
        print(f"raw consume (ceiling, same broker, same run)      {ceiling:>12,.0f} klines/s")
        print(f"{label:<50} {rate:>12,.0f} klines/s   ratio {rate / ceiling:.3f}")


if __name__ == "__main__":
    main()
