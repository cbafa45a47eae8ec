"""``registry.trees.ObliviousTrees`` against CatBoost's own ``predict_proba`` on real feature rows
(the XRP dump's, nulls included), for both NaN modes and several depths."""

from __future__ import annotations

import numpy as np
import pytest
from catboost import CatBoostClassifier
from clickhouse_connect.driver.client import Client

from registry.trees import ObliviousTrees, UnsupportedModelError
from training.dataset import load_rows

pytestmark = [pytest.mark.clickhouse]


@pytest.fixture
def rows(xrp_features: Client) -> tuple[np.ndarray, np.ndarray]:
    r = load_rows(xrp_features, "XRPUSDT", "1m", include_incomplete=True)
    assert np.isnan(r.x).any(), "the real rows hold nulls (warm-up, gaps): the NaN path is exercised"
    return r.x, r.y


@pytest.mark.parametrize(("nan_mode", "depth"), [("Min", 6), ("Max", 6), ("Min", 3), ("Min", 8)])
def test_trees_equal_catboost_predict_proba(
    rows: tuple[np.ndarray, np.ndarray], nan_mode: str, depth: int
) -> None:
    x, y = rows
    m = CatBoostClassifier(iterations=120, depth=depth, nan_mode=nan_mode, random_seed=7, verbose=False,
                           allow_writing_files=False, thread_count=2)  # fmt: skip
    m.fit(x[:40_000], y[:40_000])
    trees = ObliviousTrees.from_catboost(m)
    ref = m.predict_proba(x)[:, 1]
    got = np.array([trees.probability(v) for v in x])
    assert np.abs(got - ref).max() < 1e-12
    # rows exactly on a border (value > border is the right branch, compared in float32)
    border_rows = x[:200].copy()
    border_rows[:, trees._feat[0]] = float(trees._border[0])
    on_border = np.array([trees.probability(v) for v in border_rows])
    assert np.abs(on_border - m.predict_proba(border_rows)[:, 1]).max() < 1e-12


def test_a_model_with_categorical_features_is_refused() -> None:
    rng = np.random.default_rng(1)
    x = [[float(v), str(int(c))] for v, c in zip(rng.normal(size=300), rng.integers(0, 3, 300), strict=True)]
    y = rng.integers(0, 2, 300)
    m = CatBoostClassifier(iterations=5, verbose=False, allow_writing_files=False, cat_features=[1]).fit(x, y)
    with pytest.raises(UnsupportedModelError, match="other than float"):
        ObliviousTrees.from_catboost(m)


def test_a_model_deeper_than_8_is_refused(rows: tuple[np.ndarray, np.ndarray]) -> None:
    """A leaf index of more than 8 bits is not read (the loader then scores through CatBoost)."""
    x, y = rows
    m = CatBoostClassifier(iterations=3, depth=9, random_seed=7, verbose=False, allow_writing_files=False,
                           thread_count=2)  # fmt: skip
    m.fit(x[:5_000], y[:5_000])
    with pytest.raises(UnsupportedModelError, match="depth 9"):
        ObliviousTrees.from_catboost(m)
