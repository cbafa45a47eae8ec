"""A stream with a history: the real XRP dump's candles and feature rows in chDB, a production
model trained on its first 40% and the rest scored by it (as the scoring topology scores)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from registry.loader import load_model
from registry.store import Model, Registry
from sinks.clickhouse_bulk import insert_candles
from sinks.scores import write_scores
from tests.topologies.helpers import PlainState, xrp_candles
from topologies.feature_logic import FeatureStream
from topologies.scoring import score_row
from training.train import TrainConfig, train_model

FAST = TrainConfig(params={"iterations": 60, "depth": 4, "learning_rate": 0.1, "loss_function": "Logloss",
                           "random_seed": 3, "l2_leaf_reg": 3.0})  # fmt: skip


@dataclass
class Scored:
    ch: Client
    model: Model
    candles: Any
    scores: list[dict[str, Any]]
    artifact_dir: Path


@pytest.fixture
def scored(xrp_features: Client, tmp_path: Path) -> Scored:
    ch = xrp_features
    cs = xrp_candles()
    insert_candles(ch, cs)
    split = cs[int(len(cs) * 0.4)].open_time  # both real outages fall in the scored part
    m = train_model(ch, "XRPUSDT", "1m", artifact_dir=tmp_path / "models", config=FAST, end_ms=split,
                    thread_count=2)  # fmt: skip
    Registry(ch).promote(m.model_id, actor="test")
    loaded = load_model(Registry(ch), m.model_id)
    fs, state = FeatureStream(), PlainState()
    rows: list[dict[str, Any]] = []
    for at in range(0, len(cs), 1000):
        rows += fs.apply_many(cs[at : at + 1000], ["new"] * len(cs[at : at + 1000]), state)
    scores = []
    for r in rows:
        if r["open_time"] > split:
            r["event_seq"], r["emitted_at"] = 1, 0
            scores.append(score_row(r, loaded, 0.5, 1))
    write_scores(ch, scores)
    return Scored(ch, m, cs, scores, tmp_path / "models")
