"""The production models a scorer holds, kept current from the registry without a restart.

``ProductionModels.get(symbol, interval)`` answers from memory; at most every ``poll_s``
seconds it reads which model is production for each stream (``Registry.productions``: the
newest promotion event) and loads the ones that changed, checking each artifact against its
SHA-256 first. A model that fails to load (missing or corrupt artifact) is logged and counted,
and the stream keeps the model it had. The switch is one dict assignment, so each row is
scored by exactly one model, whose id the score carries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge

from registry.store import Registry
from registry.trees import ObliviousTrees, UnsupportedModelError

logger = logging.getLogger(__name__)

#: rows from which ``LoadedModel.probabilities`` scores a page as one matrix
PAGE_ROWS = 16

MODEL_LOADS = Counter("scoring_model_loads_total", "Production models loaded by a scorer", ["outcome"])
MODEL_POLL_AGE = Gauge("scoring_model_poll_age_seconds", "Seconds since the scorer last read the registry")


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    version: int
    feature_names: tuple[str, ...]
    feature_set_version: int
    model: Any  #: a CatBoostClassifier
    trees: ObliviousTrees | None = None  #: its trees in numpy (None: score through CatBoost)
    #: a feature row -> its feature values in the model's order (set from ``feature_names``)
    _values: Callable[[Mapping[str, Any]], tuple[Any, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        get = itemgetter(*self.feature_names)
        one = len(self.feature_names) == 1
        object.__setattr__(self, "_values", (lambda r: (get(r),)) if one else get)

    def vector(self, row: Mapping[str, Any]) -> np.ndarray:
        """The row's features in the model's order, float64, a null as NaN."""
        return np.array(self._values(row), dtype=np.float64)

    def probability(self, row: Mapping[str, Any]) -> float:
        """P(label 1) for one feature row (a null feature is NaN, which CatBoost handles)."""
        if self.trees is not None:  # float32 at once: the trees compare in float32
            return self.trees.probability(np.array(self._values(row), dtype=np.float32))
        x = self.vector(row)
        p = self.model.predict(x.reshape(1, -1), prediction_type="Probability", thread_count=1)
        return float(p[0][1])

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> list[float]:
        """``probability`` of each of ``rows``: a page of ``PAGE_ROWS`` or more scored at once by
        CatBoost's own batch predict (one ``Pool`` for the page: its fixed cost of ~70 µs, then
        well under a µs a row), fewer one by one (the numpy trees' ~10 µs a row win there)."""
        if len(rows) < PAGE_ROWS:
            return [self.probability(r) for r in rows]
        x = np.array([self._values(r) for r in rows], dtype=np.float64)
        p = self.model.predict(x, prediction_type="Probability", thread_count=1)
        return [float(v) for v in p[:, 1]]


def load_model(reg: Registry, model_id: str) -> LoadedModel:
    from catboost import CatBoostClassifier

    m = reg.model(model_id)
    blob = reg.artifact_bytes(m)  # ArtifactError when missing or altered
    model = CatBoostClassifier()
    model.load_model(blob=blob)
    try:
        trees: ObliviousTrees | None = ObliviousTrees.from_catboost(model)
    except UnsupportedModelError as exc:
        logger.warning("model %s scored through CatBoost's predict (%s)", model_id, exc)
        trees = None
    return LoadedModel(m.model_id, m.version, tuple(m.feature_names), m.feature_set_version, model, trees)


class ProductionModels:
    def __init__(self, registry: Registry, poll_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.registry = registry
        self.poll_s = poll_s
        self.clock = clock
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._failed: dict[str, str] = {}  # model id -> error, not retried until it changes
        self._polled: float | None = None

    def refresh(self) -> None:
        """Read the registry now and load every production model that changed."""
        self._polled = self.clock()
        MODEL_POLL_AGE.set(0)
        try:
            wanted = self.registry.productions()
        except Exception as exc:  # ClickHouse away: keep scoring with what we hold
            logger.warning("model registry unreadable, keeping %d model(s): %s", len(self._models), exc)
            return
        for stream, model_id in wanted.items():
            held = self._models.get(stream)
            if (held is not None and held.model_id == model_id) or model_id in self._failed:
                continue
            try:
                loaded = load_model(self.registry, model_id)
            except Exception as exc:  # ArtifactError, RegistryError, a CatBoost load error
                self._failed[model_id] = str(exc)
                MODEL_LOADS.labels("failed").inc()
                logger.error("production model %s of %s %s not loaded, keeping %s: %s", model_id, *stream,
                             held.model_id if held else "none", exc)  # fmt: skip
                continue
            self._models[stream] = loaded
            MODEL_LOADS.labels("loaded").inc()
            logger.info(
                "scoring %s %s with %s (was %s)", *stream, model_id, held.model_id if held else "none"
            )

    def get(self, symbol: str, interval: str) -> LoadedModel | None:
        now = self.clock()
        if self._polled is None or now - self._polled >= self.poll_s:
            self.refresh()
        else:
            MODEL_POLL_AGE.set(now - self._polled)
        return self._models.get((symbol, interval))
