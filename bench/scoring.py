"""Scoring: rows/s of the scoring topology against CatBoost's own batch predict (the ceiling),
and the training time of one model.

Run: ``.venv/bin/python -m bench.scoring``. Prints one JSON object.

- Training: the real XRP 1m dump's feature rows (61,274 bars; the default 300 iterations,
  depth 6, two threads) through ``training.train.train_model`` into chDB.
- Ceiling: ``predict_proba`` over the feature matrix of the newest 60,000 rows at once, and the
  per-row call the topology makes (``LoadedModel.probability``: numpy trees,
  ``registry.trees``), outside Kafka, and CatBoost's own single-row ``predict`` for comparison.
- Topology: the same 60,000 rows produced onto the features topic, the scoring Application
  alone, from its first record to the last one processed (``processed_rows_per_s``) and to
  its last ClickHouse write (``topology_rows_per_s``: includes the wait for the last
  checkpoint, up to one commit interval, 1 s).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer

from indicators.definitions import FEATURE_NAMES
from ohlcv.infra.broker import EmbeddedBroker
from ohlcv.infra.clickhouse import make_client, migrate
from registry.loader import load_model
from registry.store import Registry
from sinks.features import write_features
from sinks.scores import ScoreRows
from tests.topologies.helpers import PlainState, xrp_candles
from tests.topologies.pipeline import unique_topics
from topologies.feature_logic import FeatureStream
from topologies.runner import TopologyConfig, build_scoring_application, tune_gc
from training.train import train_model

N = 60_000


def main() -> None:
    cs = xrp_candles()
    fs, state = FeatureStream(), PlainState()
    rows: list[dict[str, Any]] = []
    for at in range(0, len(cs), 1000):
        rows += fs.apply_many(cs[at : at + 1000], ["new"] * len(cs[at : at + 1000]), state)
    rows = [dict(r, event_seq=1, emitted_at=0) for r in rows]
    out: dict[str, Any] = {}
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as d:
        url, db = f"chdb://{d}/ch", "bench"
        ch = make_client(url, db)
        migrate(ch)
        write_features(ch, rows)
        t0 = time.perf_counter()
        m = train_model(ch, "XRPUSDT", "1m", artifact_dir=Path(d) / "models", thread_count=2)
        out["training"] = {
            "rows": m.train_rows + m.validation_rows, "seconds": round(time.perf_counter() - t0, 2),
            "fit_seconds": round(m.train_seconds, 2), "validation_auc": round(m.metrics["auc"], 4),
        }  # fmt: skip
        Registry(ch).promote(m.model_id)
        loaded = load_model(Registry(ch), m.model_id)
        live = rows[-N:]
        x = np.array([[np.nan if r[n] is None else r[n] for n in FEATURE_NAMES] for r in live])
        t0 = time.perf_counter()
        loaded.model.predict_proba(x)
        batch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r in live[:2000]:
            loaded.probability(r)
        per_row_s = (time.perf_counter() - t0) / 2000
        t0 = time.perf_counter()
        for r in live[:2000]:
            loaded.model.predict([[np.nan if r[n] is None else r[n] for n in FEATURE_NAMES]],
                                 prediction_type="Probability", thread_count=1)  # fmt: skip
        catboost_row_s = (time.perf_counter() - t0) / 2000
        topics = unique_topics(broker.address, f"s{uuid.uuid4().hex[:6]}.")
        p = Producer({"bootstrap.servers": broker.address, "linger.ms": 20})
        for r in live:
            p.produce(topics["features"], key="XRPUSDT:1m", value=orjson.dumps(r))
            p.poll(0)
        p.flush(60)
        cfg = TopologyConfig(broker_address=broker.address, clickhouse_url=url, clickhouse_database=db,
                             consumer_group=f"s-{uuid.uuid4().hex[:6]}", state_dir=Path(d) / "state",
                             features_topic=topics["features"], scores_topic=topics["scores"])  # fmt: skip
        app = build_scoring_application(cfg)
        tune_gc()
        first: list[float] = []
        last: list[float] = []
        done: list[float] = []

        def processed(*a: Any) -> None:
            done[:] = [time.perf_counter()]
            if not first:
                first.append(done[0])

        app._on_message_processed = processed
        write = ScoreRows.write

        def timed(self: ScoreRows, client: Any) -> None:
            write(self, client)
            last[:] = [time.perf_counter()]

        ScoreRows.write = timed  # type: ignore[method-assign]
        try:
            app.run(timeout=5)
        finally:
            ScoreRows.write = write  # type: ignore[method-assign]
        stored = ch.query("SELECT count() FROM model_inference_log FINAL").result_rows[0][0]
        assert stored == N, f"{stored} of {N} scores stored"
        out["scoring"] = {
            "rows": N, "topology_rows_per_s": round(N / (last[0] - first[0])),
            "processed_rows_per_s": round(N / (done[0] - first[0])),
            "catboost_batch_rows_per_s": round(N / batch_s), "per_row_predict_us": round(per_row_s * 1e6, 1),
            "per_row_ceiling_rows_per_s": round(1 / per_row_s),
            "catboost_single_row_predict_us": round(catboost_row_s * 1e6, 1),
            "share_of_batch_ceiling": round(N / (done[0] - first[0]) / (N / batch_s), 4),
        }  # fmt: skip
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
