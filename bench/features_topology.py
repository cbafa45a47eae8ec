"""The features topology end to end: candle events on Kafka -> feature rows in chDB and on
``ohlcv.features``.

Run: ``.venv/bin/python -m bench.features_topology``. Prints one JSON object.

- Throughput (batch appends): a year of 1m candles (525,600 bars: the real XRP 1m dump, 61,274
  bars with its two real outages, laid end to end in time, 8.6 times) as ``append`` events of
  500 candles (the shape a replay or an import gives the candle topology's output), read by the
  features Application alone (``build_features_application``), from its first record to its
  last ClickHouse write. Baseline, same run: the batch reference (``indicators.batch``, pandas)
  over the same candles.
- Latency (the live shape): single-candle ``append`` events produced at 200/s while the
  Application runs; per row, the ``ohlcv.features`` record's arrival at a consumer minus the
  event's production time.
"""

from __future__ import annotations

import json
import platform
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.api_bench import pct
from indicators.batch import features
from ohlcv.infra.broker import EMBEDDED_CONSUMER_CONFIG, EmbeddedBroker
from ohlcv.infra.clickhouse import make_client, migrate
from schemas.events import candle_out
from schemas.klines import Candle
from schemas.topics import FEATURES
from sinks.features import FeatureRows
from tests.indicators.helpers import frame
from tests.topologies.helpers import xrp_candles
from tests.topologies.pipeline import unique_topics
from topologies.features import FeaturePublisher
from topologies.runner import TopologyConfig, build_features_application, tune_gc

YEAR = 525_600
MIN = 60_000
BATCH = 500


def year_of_candles() -> list[Candle]:
    dump = xrp_candles()
    span = dump[-1].open_time - dump[0].open_time + MIN
    out: list[Candle] = []
    k = 0
    while len(out) < YEAR:
        shift = k * span
        out.extend(replace(c, open_time=c.open_time + shift, close_time=c.close_time + shift) for c in dump)
        k += 1
    return out[:YEAR]


def append_event(cs: list[Candle], seq: int, emitted_at: int) -> bytes:
    return orjson.dumps({
        "type": "append", "symbol": cs[0].symbol, "interval": cs[0].interval, "seq": seq,
        "emitted_at": emitted_at, "count": len(cs), "candles": [candle_out(c) for c in cs], "late": False,
    })  # fmt: skip


def paced_appends(
    address: str, topic: str, candles: list[Candle], n: int, per_s: float, arrived: Callable[[], int],
    sent: dict[int, float], errors: list[BaseException],
) -> None:  # fmt: skip
    """Single-candle ``append`` events of ``XRPUSDT:1m`` at ``per_s``: 50 warm-up candles first,
    until ``arrived()`` counts 50 (the Application is assigned and seeded), then ``n`` paced
    ones, each one's send time in ``sent`` by open time; a failure goes to ``errors``."""
    try:
        p = Producer({"bootstrap.servers": address, "linger.ms": 0, "partitioner": "murmur2"})
        for seq, c in enumerate(candles[:50], 1):
            p.produce(topic, key="XRPUSDT:1m", value=append_event([c], seq, 0))
        p.flush(10)
        deadline = time.monotonic() + 60
        while arrived() < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        gap = 1 / per_s
        t = time.perf_counter()
        for seq, c in enumerate(candles[50 : 50 + n], 51):
            t += gap
            time.sleep(max(0.0, t - time.perf_counter()))
            sent[c.open_time] = time.perf_counter()
            p.produce(topic, key="XRPUSDT:1m", value=append_event([c], seq, 0))
            p.poll(0)
        p.flush(10)
    except BaseException as exc:
        errors.append(exc)


def config(address: str, topics: dict[str, str], url: str, db: str) -> TopologyConfig:
    return TopologyConfig(
        broker_address=address, clickhouse_url=url, clickhouse_database=db,
        consumer_group=f"f-{uuid.uuid4().hex[:6]}", state_dir=Path(tempfile.mkdtemp()) / "state",
        embedded_broker=True, events_topic=topics["events"], features_topic=topics["features"],
    )  # fmt: skip


def throughput(address: str, url: str, candles: list[Candle]) -> dict[str, Any]:
    topics = unique_topics(address, f"b{uuid.uuid4().hex[:6]}.")
    db = f"bench_{uuid.uuid4().hex[:6]}"
    migrate(make_client(url, db))
    p = Producer({"bootstrap.servers": address, "linger.ms": 20, "partitioner": "murmur2"})
    for seq, i in enumerate(range(0, len(candles), BATCH), 1):
        p.produce(topics["events"], key="XRPUSDT:1m", value=append_event(candles[i : i + BATCH], seq, 0))
        p.poll(0)
    p.flush(60)
    app = build_features_application(config(address, topics, url, db))
    tune_gc()
    first: list[float] = []
    last: list[float] = []

    def on_processed(topic: str, partition: int, offset: int) -> None:
        if not first:
            first.append(time.perf_counter())

    app._on_message_processed = on_processed  # the public hook is a constructor argument
    write = FeatureRows.write

    def timed_write(self: FeatureRows, client: Any) -> None:
        write(self, client)
        last[:] = [time.perf_counter()]

    FeatureRows.write = timed_write  # type: ignore[method-assign]
    try:
        app.run(timeout=5)
    finally:
        FeatureRows.write = write  # type: ignore[method-assign]
    stored = make_client(url, db).query("SELECT count() FROM feature_snapshots FINAL").result_rows[0][0]
    assert stored == len(candles), f"stored {stored} of {len(candles)} rows"
    secs = last[0] - first[0]
    t0 = time.perf_counter()
    features(frame(candles), MIN)
    batch_s = time.perf_counter() - t0
    return {
        "rows": len(candles),
        "topology_rows_per_s": round(len(candles) / secs),
        "topology_s": round(secs, 2),
        "batch_reference_rows_per_s": round(len(candles) / batch_s),
        "batch_reference_s": round(batch_s, 2),
    }


def latency(
    address: str, url: str, candles: list[Candle], n: int = 2000, per_s: float = 200
) -> dict[str, Any]:
    topics = unique_topics(address, f"l{uuid.uuid4().hex[:6]}.")
    db = f"bench_{uuid.uuid4().hex[:6]}"
    migrate(make_client(url, db))
    app = build_features_application(config(address, topics, url, db))
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    errors: list[BaseException] = []

    def consume() -> None:
        c = Consumer({"bootstrap.servers": address, "group.id": f"r-{uuid.uuid4().hex[:6]}",
                      "enable.auto.commit": False, **EMBEDDED_CONSUMER_CONFIG})  # fmt: skip
        c.assign([TopicPartition(topics["features"], p, 0) for p in range(FEATURES.partitions)])
        deadline = time.monotonic() + 120
        while len(got) < n + 50 and time.monotonic() < deadline:
            m = c.poll(0.05)  # one at a time: consume(n, t) would wait for n messages or t
            if m is not None and m.error() is None:
                got.setdefault(orjson.loads(m.value())["open_time"], time.perf_counter())
        c.close()

    def produce() -> None:
        paced_appends(address, topics["events"], candles, n, per_s, lambda: len(got), sent, errors)

    published: dict[int, float] = {}  # when the Application handed each row to its producer
    publish = FeaturePublisher.__call__

    def timed_publish(self: FeaturePublisher, rows: list[dict[str, Any]], *a: Any) -> None:
        publish(self, rows, *a)
        now = time.perf_counter()
        for r in rows:
            published.setdefault(r["open_time"], now)

    FeaturePublisher.__call__ = timed_publish  # type: ignore[method-assign]
    threads = [threading.Thread(target=consume, daemon=True), threading.Thread(target=produce, daemon=True)]
    for th in threads:
        th.start()
    try:
        app.run(timeout=4)
    finally:
        FeaturePublisher.__call__ = publish  # type: ignore[method-assign]
    for th in threads:
        th.join(30)
    assert not errors, errors
    ms = sorted((got[t] - s) * 1000 for t, s in sent.items() if t in got)
    assert len(ms) == n, f"{len(ms)} of {n} rows arrived"
    # the split: event produced -> row handed to the producer (broker, fetch, the step), and
    # row handed to the producer -> row at the consumer (linger, broker, fetch)
    into = sorted((published[t] - s) * 1000 for t, s in sent.items())
    out = sorted((got[t] - published[t]) * 1000 for t in sent)
    return {"events": n, "per_s": per_s, "p50_ms": round(pct(ms, 0.5), 2), "p99_ms": round(pct(ms, 0.99), 2),
            "max_ms": round(ms[-1], 2),
            "to_publish_p50_p99_ms": [round(pct(into, q), 2) for q in (0.5, 0.99)],
            "publish_to_consumer_p50_p99_ms": [round(pct(out, q), 2) for q in (0.5, 0.99)]}  # fmt: skip


def main() -> None:
    candles = year_of_candles()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as d:
        url = f"chdb://{d}/ch"
        out = {"throughput": throughput(broker.address, url, candles),
               "latency": latency(broker.address, url, list(xrp_candles()))}  # fmt: skip
    out["env"] = (f"{platform.python_version()}, quixstreams {version('quixstreams')}, "
                  f"chdb {version('chdb')}")  # fmt: skip
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
