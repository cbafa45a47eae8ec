"""Risk: score rows/s through the risk topology against the batch backtest over the same rows.

Run: ``.venv/bin/python -m bench.risk``. Prints one JSON object.

- Rows: the real XRP dump (61,274 1m bars, both outages), their feature rows (the features logic), a
  score each from a fixed rule on the 5-bar return (the engine does not care which model),
  stored in ``model_inference_log`` and the candles in ``ohlcv_candles``.
- Topology: the scores produced onto ``ohlcv.scores`` (one record each, as the scoring topology
  produces them); the risk Application alone, from its first record to its last ClickHouse
  write (the checkpoint wait included).
- Batch: ``risk.backtest.backtest`` over the same stored rows (its ClickHouse reads included).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Producer

from ohlcv.infra.broker import EmbeddedBroker
from ohlcv.infra.clickhouse import make_client, migrate
from ohlcv.infra.kafka import ensure_topics
from risk.backtest import backtest
from schemas.risk import RiskLimits
from schemas.topics import RISK_EVENTS, SCORES, TopicSpec
from sinks.clickhouse_bulk import insert_candles
from sinks.scores import write_scores
from tests.risk.data import rule_scores
from tests.topologies.helpers import xrp_candles
from topologies.runner import TopologyConfig, build_risk_application

N = 200_000


def main() -> None:
    cs = xrp_candles()[:N]
    scores = rule_scores(cs)
    limits = RiskLimits()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as d:
        url, db = f"chdb://{d}/ch", "bench"
        ch = make_client(url, db)
        migrate(ch)
        insert_candles(ch, cs)
        for at in range(0, len(scores), 50_000):
            write_scores(ch, scores[at : at + 50_000])
        prefix = f"b{uuid.uuid4().hex[:6]}."
        topics = {"scores": prefix + SCORES.name, "events": prefix + RISK_EVENTS.name}
        ensure_topics(broker.address, tuple(TopicSpec(n, "", {}, "", partitions=1) for n in topics.values()))
        p = Producer({"bootstrap.servers": broker.address, "linger.ms": 20})
        for s in scores:
            p.produce(topics["scores"], key=b"XRPUSDT:1m", value=orjson.dumps(s))
            p.poll(0)
        p.flush(60)
        cfg = TopologyConfig(
            broker_address=broker.address, clickhouse_url=url, clickhouse_database=db,
            consumer_group="bench-risk",
            state_dir=Path(d) / "state", scores_topic=topics["scores"], risk_events_topic=topics["events"],
            risk=True, risk_limits=limits, risk_initial_equity=10_000.0,
        )  # fmt: skip
        app = build_risk_application(cfg)
        t0 = time.perf_counter()
        app.run(timeout=3)
        stream_s = time.perf_counter() - t0 - 3  # less the idle wait that ends the run
        stored = ch.query("SELECT count() FROM risk_state").result_rows[0][0]
        t0 = time.perf_counter()
        ref = backtest(ch, "XRPUSDT", "1m", start_ms=None, end_ms=None, initial_equity=10_000.0,
                       default_limits=limits)  # fmt: skip
        batch_s = time.perf_counter() - t0
    print(json.dumps({
        "rows": len(scores), "stored_marks": int(stored),
        "topology_rows_per_s": round(len(scores) / stream_s), "topology_seconds": round(stream_s, 2),
        "backtest_rows_per_s": round(len(scores) / batch_s), "backtest_seconds": round(batch_s, 2),
        "ratio_topology_to_backtest": round(batch_s / stream_s, 3),
        "fills": len(ref.fills), "summary": ref.summary,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
