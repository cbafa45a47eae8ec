"""``/api/features/*`` over the session dataset: the feature rows the real topology derived from
real LINKUSDT candles with a repair, a late fill and an open gap, read back through the API and
held against the independent batch reference (``indicators.batch``, pandas), and drift held
against a plain pandas computation of its definition."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from indicators.batch import features
from indicators.definitions import FEATURE_NAMES
from schemas.features import FeatureRow
from tests.api.conftest import AUTH, LATE, MIN, OPEN_GAP, SYMBOL, Dataset, api_settings
from tests.indicators.helpers import frame, mismatches


def _get(client: TestClient, path: str, **params: Any) -> Any:
    r = client.get(f"/api/features/{path}", params={"symbol": SYMBOL, "interval": "1m", **params},
                   headers=AUTH)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


def _walk(client: TestClient, forward: bool, limit: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor: dict[str, int] = {"after_open_time": 0} if forward else {}
    while True:
        page = _get(client, "history", limit=limit, **cursor)
        assert page["count"] == len(page["rows"]) <= limit
        out = out + page["rows"] if forward else page["rows"] + out
        nxt = page["next_after_open_time" if forward else "next_before_open_time"]
        if nxt is None:
            return out
        cursor = {"after_open_time" if forward else "before_open_time": nxt}


def test_history_pages_every_row_once_and_equals_the_batch_reference(
    client: TestClient, dataset: Dataset
) -> None:
    stored = dataset.stored()
    forward = _walk(client, forward=True, limit=97)
    backward = _walk(client, forward=False, limit=64)
    assert forward == backward
    assert [r["open_time"] for r in forward] == [c.open_time for c in stored]
    for r in forward:
        FeatureRow.model_validate(r)
    batch = features(frame(stored, dataset.repaired), MIN)
    assert not mismatches(forward, batch)
    by_time = {r["open_time"]: r for r in forward}
    base = stored[0].open_time
    # the repair and the late fill re-derived their rows, with the reason
    revised = by_time[dataset.revised.open_time]
    assert (revised["feature_version"], revised["reason"], revised["bar_repaired"]) == (2, "repair", True)
    assert revised["close"] == dataset.revised.close
    # the late bars were derived when they filled the hole (version 1, late_fill), then again by
    # the repair of bar 50, which came after them: its recursive features run forward through them
    late = [by_time[base + i * MIN] for i in LATE]
    assert [(r["feature_version"], r["reason"], r["bar_repaired"]) for r in late] == [(2, "repair", True)] * 2
    # after the open gap, 49 bars say their window has a hole; the 50th is complete again
    after_gap = [by_time[base + (OPEN_GAP[-1] + 1 + k) * MIN] for k in range(51)]
    assert [r["window_complete"] for r in after_gap] == [False] * 49 + [True] * 2
    assert after_gap[0]["bars_missing_in_window"] == len(OPEN_GAP)
    assert after_gap[0]["ret_1"] is None and after_gap[0]["carry"][0] == 0


def test_latest_is_the_newest_closed_candles_row(client: TestClient, dataset: Dataset) -> None:
    row = _get(client, "latest")
    assert row["open_time"] == dataset.stored()[-1].open_time  # the candle in progress has none
    assert row == _get(client, "history", limit=1)["rows"][0]
    five = _get(client, "latest", interval="5m")
    assert five["interval"] == "5m" and five["open_time"] % (5 * MIN) == 0


def test_drift_equals_its_definition_computed_with_pandas(client: TestClient, dataset: Dataset) -> None:
    window = 100
    body = _get(client, "drift", window=window)
    ref_frame = features(frame(dataset.stored(), dataset.repaired), MIN)
    complete = ref_frame[ref_frame["window_complete"]].tail(2 * window)
    reference, recent = complete.head(window), complete.tail(window)
    assert body["status"] in ("ok", "drift") and body["complete_rows"] == 2 * window
    assert body["recent"] == {"from_open_time": int(recent["open_time"].iloc[0]),
                              "to_open_time": int(recent["open_time"].iloc[-1])}  # fmt: skip
    assert body["reference"]["to_open_time"] == int(reference["open_time"].iloc[-1])
    assert [f["name"] for f in body["features"]] == list(FEATURE_NAMES)
    threshold = dataset.settings.drift_z_threshold
    drifted = []
    for f in body["features"]:
        r, ref = recent[f["name"]].dropna(), reference[f["name"]].dropna()
        assert (f["recent_n"], f["reference_n"]) == (len(r), len(ref))
        assert math.isclose(f["recent_mean"], r.mean(), rel_tol=1e-9, abs_tol=1e-15)
        assert math.isclose(f["reference_std"], ref.std(ddof=1), rel_tol=1e-9, abs_tol=1e-15)
        z = (r.mean() - ref.mean()) / (ref.std(ddof=1) / np.sqrt(len(r)))
        assert math.isclose(f["z"], z, rel_tol=1e-6, abs_tol=1e-9), f
        if abs(z) > threshold:
            drifted.append(f["name"])
    assert body["drifted"] == drifted
    assert body["status"] == ("drift" if drifted else "ok")


def test_drift_without_two_windows_of_complete_rows_is_insufficient(client: TestClient) -> None:
    body = _get(client, "drift", window=5000)
    assert (body["status"], body["features"], body["recent"]) == ("insufficient", [], None)
    assert body["drifted"] == []
    assert 0 < body["complete_rows"] < 10_000


def test_bad_requests_are_refused_with_the_reason(client: TestClient, dataset: Dataset) -> None:
    params = {"symbol": SYMBOL, "interval": "1m"}
    r = client.get("/api/features/latest", params=params)
    assert r.status_code == 401
    r = client.get("/api/features/drift", params={**params, "window": 19}, headers=AUTH)
    assert r.status_code == 422 and "window" in r.json()["message"]
    r = client.get("/api/features/history", params={**params, "limit": 1001}, headers=AUTH)
    assert r.status_code == 422 and "limit" in r.json()["message"]
    r = client.get("/api/features/history", params={**params, "before_open_time": 5, "after_open_time": 1},
                   headers=AUTH)  # fmt: skip
    assert r.status_code == 400 and "mutually exclusive" in r.json()["detail"]
    r = client.get("/api/features/latest", params={**params, "symbol": "DOGEUSDT"}, headers=AUTH)
    assert r.status_code == 404 and "DOGEUSDT is not served" in r.json()["detail"]


def test_latest_of_a_served_stream_without_rows_is_a_404_that_says_how_to_get_them(dataset: Dataset) -> None:
    settings = api_settings(symbols=[SYMBOL, "BTCUSDT"])
    with TestClient(dataset.app(settings)) as c:
        r = c.get("/api/features/latest", params={"symbol": "BTCUSDT", "interval": "1m"}, headers=AUTH)
        assert r.status_code == 404, r.text
        assert "ohlcv features rebuild" in r.json()["detail"]
        r = c.get("/api/features/history", params={"symbol": "BTCUSDT", "interval": "1m"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["rows"] == [] and r.json()["next_before_open_time"] is None
