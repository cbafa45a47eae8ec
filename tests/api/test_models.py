"""Model registry and inference routes over real chDB, with models trained on real XRP rows."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient

from api.main import create_app
from ohlcv.infra.clickhouse import make_client
from registry.loader import load_model
from registry.store import Registry
from sinks.scores import write_scores
from tests.api.conftest import AUTH, api_settings
from tests.topologies.helpers import PlainState, xrp_candles
from topologies.feature_logic import FeatureStream
from topologies.scoring import score_row
from training.train import TrainConfig, train_model

pytestmark = [pytest.mark.clickhouse, pytest.mark.broker]
Q = {"symbol": "XRPUSDT", "interval": "1m"}


def _fast(seed: int, depth: int) -> TrainConfig:
    return TrainConfig(params={"iterations": 30, "depth": depth, "learning_rate": 0.1, "random_seed": seed})


@pytest.fixture
def api(xrp_features: Client, ch_url: str, ch_db: str, broker: str) -> Any:
    settings = api_settings(symbols=["XRPUSDT"])
    app = create_app(
        settings,
        broker_address=broker,
        clickhouse_client_factory=functools.partial(make_client, ch_url, ch_db),
    )
    with TestClient(app) as client:
        yield client


def test_summary_recommend_promote_events_and_rollback(
    api: TestClient, xrp_features: Client, tmp_path: Path
) -> None:
    ch = xrp_features
    assert api.get("/api/models/summary", params=Q, headers=AUTH).json()["production"] is None
    a = train_model(ch, "XRPUSDT", "1m", artifact_dir=tmp_path, config=_fast(1, 4), thread_count=2)
    s = api.get("/api/models/summary", params=Q, headers=AUTH).json()
    assert s["candidate"]["model_id"] == a.model_id and s["promote_recommend"] is True
    r = api.post("/api/models/promotion/recommend", params=Q, headers=AUTH)
    assert r.status_code == 200 and r.json()["event"]["to_model_id"] == a.model_id
    b = train_model(ch, "XRPUSDT", "1m", artifact_dir=tmp_path, config=_fast(2, 3), thread_count=2)
    listed = api.get("/api/models", headers=AUTH).json()
    assert [(m["model_id"], m["is_production"]) for m in listed] == [(b.model_id, False), (a.model_id, True)]
    one = api.get(f"/api/models/{b.model_id}", headers=AUTH).json()
    assert one["metrics"]["auc"] == b.metrics["auc"] and len(one["metrics"]["bins"]) == 10
    s = api.get("/api/models/summary", params=Q, headers=AUTH).json()
    assert s["production"]["model_id"] == a.model_id and s["candidate"]["model_id"] == b.model_id
    assert s["reasons"]  # the rules say why, recommended or not
    assert api.post(f"/api/models/{b.model_id}/promote", headers=AUTH).status_code == 200
    assert api.post(f"/api/models/{b.model_id}/promote", headers=AUTH).status_code == 409  # already
    events = api.get("/api/models/promotion/events", params=Q, headers=AUTH).json()
    assert [(e["kind"], e["to_model_id"]) for e in events] == [("promote", b.model_id), ("auto", a.model_id)]
    assert events[0]["from_metrics"]["auc"] == a.metrics["auc"]
    assert api.post("/api/models/rollback", params=Q, headers=AUTH).json()["to_model_id"] == a.model_id
    # a corrupt artifact: 409 naming it, production unchanged
    Path(b.artifact_path).write_bytes(b"not a model")
    r = api.post(f"/api/models/{b.model_id}/promote", headers=AUTH)
    assert r.status_code == 409 and "does not match its checksum" in r.json()["detail"]
    assert Registry(ch).production_id("XRPUSDT", "1m") == a.model_id
    assert api.get("/api/models/nope", headers=AUTH).status_code == 404
    assert api.post("/api/models/nope/promote", headers=AUTH).status_code == 404
    jobs = api.get("/api/training/jobs", headers=AUTH).json()
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"]
    assert api.get("/api/models", headers={}).status_code == 401
    assert api.get("/api/models/summary", params={**Q, "symbol": "BTCUSDT"}, headers=AUTH).status_code == 404


def test_inference_latest_and_history_count_gap_flagged_scores_apart(
    api: TestClient,
    xrp_features: Client,
    tmp_path: Path,
) -> None:
    ch = xrp_features
    r = api.get("/api/inference/latest", params=Q, headers=AUTH)
    assert r.status_code == 404 and "production model" in r.json()["detail"]
    m = train_model(ch, "XRPUSDT", "1m", artifact_dir=tmp_path, config=_fast(1, 4), thread_count=2)
    loaded = load_model(Registry(ch), m.model_id)
    cs = xrp_candles()
    holes = [k for k in range(1, len(cs)) if cs[k].open_time - cs[k - 1].open_time != 60_000]
    part = cs[holes[0] - 100 : holes[0] + 100]  # the first real outage in the middle
    rows = FeatureStream().apply_many(part, ["new"] * len(part), PlainState())
    assert isinstance(rows, list)
    for r_ in rows:
        r_["event_seq"], r_["emitted_at"] = 1, 0
    scores = [score_row(r_, loaded, 0.5, 1) for r_ in rows]
    write_scores(ch, scores)
    latest = api.get("/api/inference/latest", params=Q, headers=AUTH).json()
    assert latest["open_time"] == part[-1].open_time and latest["model_id"] == m.model_id
    h = api.get("/api/inference/history", params={**Q, "limit": 1000}, headers=AUTH).json()
    assert [x["open_time"] for x in h["rows"]] == [c.open_time for c in part]
    # 49 rows at the start of the part (no bars before it) and the 49 after the outage
    assert h["incomplete"] == sum(1 for s in scores if not s["window_complete"]) == 98
    page = api.get("/api/inference/history", params={**Q, "limit": 50}, headers=AUTH).json()
    assert len(page["rows"]) == 50 and page["next_before_open_time"] == page["rows"][0]["open_time"]
