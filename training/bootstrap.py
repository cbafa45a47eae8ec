"""A first production model for a stream, trained once and reused while its data is unchanged
(the demo's start; ``ohlcv train`` always trains)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from indicators.definitions import FEATURE_SET_VERSION
from registry.artifacts import ArtifactError
from registry.store import Model, Registry
from training.dataset import load_rows
from training.train import TrainConfig, train_model


@dataclass(frozen=True, slots=True)
class Bootstrapped:
    model: Model
    trained: bool  #: False: a registered model over the same rows and settings was reused
    promoted: bool


def ensure_model(client: Client, symbol: str, interval: str, *, artifact_dir: Path, config: TrainConfig,
                 thread_count: int = -1) -> Bootstrapped:  # fmt: skip
    """Reuse a registered model of the stream trained on exactly the rows it would train on now
    (same span, feature set, label and params, artifact intact), else train one; make it
    production when the stream has none."""
    reg = Registry(client)
    rows = load_rows(client, symbol, interval, horizon=config.horizon, dead_zone=config.dead_zone,
                     include_incomplete=config.include_incomplete)  # fmt: skip
    span = (int(rows.open_times[0]), int(rows.open_times[-1]))
    found: Model | None = None
    for m in reg.models(symbol, interval):
        same = ((m.data_from, m.data_to) == span and m.feature_set_version == FEATURE_SET_VERSION
                and (m.label_horizon_bars, m.label_dead_zone) == (config.horizon, config.dead_zone)
                and all(m.params.get(k) == v for k, v in config.params.items()))  # fmt: skip
        if not same:
            continue
        try:
            reg.artifact_bytes(m)
        except ArtifactError:
            continue
        found = m
        break
    model = found or train_model(client, symbol, interval, artifact_dir=artifact_dir, config=config,
                                 thread_count=thread_count, trigger="schedule")  # fmt: skip
    promoted = False
    if reg.production_id(symbol, interval) is None:
        reg.promote(model.model_id, kind="auto", reasons=["first model of the stream"], actor="bootstrap")
        promoted = True
    return Bootstrapped(model, found is None, promoted)
