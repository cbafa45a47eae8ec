"""The monitoring, playground, training and report routes on a real API server over real chDB,
and an Evidently report opened in headless Chromium through its API link."""

from __future__ import annotations

import functools
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from catboost import CatBoostClassifier

from api.main import create_app
from monitoring.live import LiveConfig
from monitoring.loop import ModelMonitor, MonitorConfig
from ohlcv.infra.clickhouse import make_client
from registry.store import Registry
from retrain.auto import RetrainConfig
from tests.api.conftest import API_KEY, AUTH, api_settings
from tests.api.harness import ApiServer
from tests.browser import render
from tests.monitoring.conftest import Scored

pytestmark = [pytest.mark.clickhouse, pytest.mark.broker, pytest.mark.slow]
Q = {"symbol": "XRPUSDT", "interval": "1m"}


def _png_colours(path: Path) -> int:
    """How many distinct bytes the PNG's pixel data holds (a blank page has one or two)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    idat, at = b"", 8
    while at < len(data):
        (n,) = struct.unpack(">I", data[at : at + 4])
        if data[at + 4 : at + 8] == b"IDAT":
            idat += data[at + 8 : at + 8 + n]
        at += 12 + n
    return len(set(zlib.decompress(idat)))


@pytest.fixture
def server(scored: Scored, ch_url: str, ch_db: str, broker: str, tmp_path: Path) -> Any:
    settings = api_settings(symbols=["XRPUSDT"], report_dir=tmp_path / "reports",
                            model_artifact_dir=scored.artifact_dir, calibration_window=2000)  # fmt: skip
    app = create_app(settings, broker_address=broker,
                     clickhouse_client_factory=functools.partial(make_client, ch_url, ch_db))  # fmt: skip
    with ApiServer(app) as srv:
        yield srv, settings


def test_monitoring_routes_and_a_report_in_a_browser(server: Any, scored: Scored, tmp_path: Path) -> None:
    srv, settings = server
    api = httpx.Client(base_url=srv.http_url, headers=AUTH, timeout=60)
    # before any monitor round: the baseline is there, live has no realized scores yet
    prod = api.get("/api/models/production/calibration", params=Q).json()
    assert prod["model_id"] == scored.model.model_id and prod["ece"] == scored.model.metrics["ece"]
    assert len(prod["bins"]) == 10
    live = api.get("/api/inference/calibration/live", params=Q).json()
    assert live["status"] == "insufficient" and live["rows"] == 0 and live["checks"] == []
    cfg = MonitorConfig(live=LiveConfig(window=2000, min_rows=100), report_dir=settings.reports_dir,
                        artifact_dir=scored.artifact_dir, retrain=RetrainConfig(enabled=False))  # fmt: skip
    ModelMonitor(scored.ch, [("XRPUSDT", "1m")], cfg).run_once()
    live = api.get("/api/inference/calibration/live", params=Q).json()
    assert live["status"] in ("ok", "breach") and live["rows"] == 2000 and len(live["checks"]) == 1
    assert live["ece_delta"] == pytest.approx(live["live"]["ece"] - prod["ece"])
    assert api.get("/api/training/retrain/events", params=Q).json()[0]["decision"] in (
        "no_trigger",
        "recommended",
    )

    # the playground: the newest row, and a given row with a threshold override
    p = api.post("/api/inference/predict", json=Q).json()
    newest = scored.scores[-1]
    assert p["open_time"] == newest["open_time"] and p["probability"] == pytest.approx(newest["probability"])
    row = scored.scores[-500]
    p2 = api.post(
        "/api/inference/predict", json={**Q, "open_time": row["open_time"], "threshold": 0.01}
    ).json()
    m = CatBoostClassifier()
    m.load_model(blob=Registry(scored.ch).artifact_bytes(scored.model))
    feats = api.get(
        "/api/features/history", params={**Q, "limit": 1, "before_open_time": row["open_time"] + 1}
    ).json()
    x = np.array(
        [[np.nan if feats["rows"][0][n] is None else feats["rows"][0][n] for n in scored.model.feature_names]]
    )
    assert p2["probability"] == pytest.approx(float(m.predict_proba(x)[0, 1]), abs=1e-12)
    assert p2["threshold"] == 0.01 and p2["decision"] is True
    assert api.post("/api/inference/predict", json={**Q, "open_time": 1}).status_code == 404
    assert api.post("/api/inference/predict", json={**Q, "symbol": "BTCUSDT"}).status_code == 404
    assert api.post("/api/inference/predict", json={**Q, "threshold": 2}).status_code == 422

    # reports: listed, served as HTML, and rendered by a real browser through the API link
    listed = api.get("/api/reports", params=Q).json()
    assert {r["kind"] for r in listed} == {"data_drift", "classification"} and "path" not in listed[0]
    drift = next(r for r in listed if r["kind"] == "data_drift")
    html = api.get(drift["url"])
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert httpx.get(srv.http_url + drift["url"]).status_code == 401
    assert httpx.get(srv.http_url + drift["url"], params={"api_key": "wrong"}).status_code == 403
    assert api.get("/api/reports/nope").status_code == 404
    shot = tmp_path / "drift.png"
    text = render(f"{srv.http_url}{drift['url']}?api_key={API_KEY}", shot)
    assert "Dataset Drift" in text and "Drifted Columns" in text
    assert f"{drift['drifted_columns']} Drifted Columns" in text  # the stored number is the one shown
    assert sum(n in text for n in scored.model.feature_names) >= 5  # the first page of the column table
    assert shot.stat().st_size > 20_000 and _png_colours(shot) > 50
    cls = next(r for r in listed if r["kind"] == "classification")
    text = render(f"{srv.http_url}{cls['url']}?api_key={API_KEY}", tmp_path / "cls.png")
    assert "Accuracy" in text and "ROC AUC" in text
    # on demand: two more reports
    made = api.post("/api/reports/run", params=Q).json()
    assert {r["kind"] for r in made} == {"data_drift", "classification"} and {r["trigger"] for r in made} == {
        "manual"
    }

    # a training run in the background, visible as a job; bad input is a clear 4xx
    r = api.post(
        "/api/training/run",
        json={**Q, "from": scored.candles[0].open_time, "to": scored.candles[30_000].open_time},
    )
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = {j["job_id"]: j for j in api.get("/api/training/jobs").json()}
        if states.get(job, {}).get("status") in ("succeeded", "failed"):
            break
        time.sleep(0.5)
    assert states[job]["status"] == "succeeded", states.get(job)
    assert Registry(scored.ch).model(states[job]["model_id"]).trigger == "manual"
    r = api.post("/api/training/run", json={**Q, "from": 1, "to": 2})
    assert r.status_code == 400 and "no feature rows" in r.json()["detail"]
    assert api.post("/api/training/run", json={**Q, "from": 5, "to": 2}).status_code == 400
    assert api.post("/api/training/run", json={**Q, "symbol": "BTCUSDT"}).status_code == 404
    assert httpx.post(srv.http_url + "/api/training/run", json=Q).status_code == 401
