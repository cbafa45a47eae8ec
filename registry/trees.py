"""A CatBoost classifier's oblivious trees, evaluated with numpy for one row at a time.

CatBoost's own ``predict`` costs ~70-150 µs for a single row, almost all of it building a
``Pool``; the trees themselves are a few hundred comparisons. ``ObliviousTrees`` reads the
model's JSON export once and scores a row with five numpy operations (~10 µs):

1. each split compares one feature with its border, as CatBoost does, in float32
   (``x > border`` is bit 1); a NaN takes the side its feature's ``nan_value_treatment`` says
   (``AsFalse``: bit 0, ``AsTrue``: bit 1);
2. a tree's leaf is ``sum(bit_d << d)`` over its splits, in order;
3. the raw score is ``scale * sum(leaf values) + bias``; P(label 1) = ``1 / (1 + exp(-raw))``.

Only what our training produces is supported (float features, oblivious trees, Logloss);
anything else is refused at load, and the loader falls back to CatBoost's ``predict``. The
result equals ``predict_proba`` to ~1e-15 (the order of the float64 sum over trees may differ);
``tests/registry/test_trees.py`` checks it on real feature rows with nulls.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class UnsupportedModelError(ValueError):
    """The model has parts this evaluator does not read (categorical features, other losses)."""


class ObliviousTrees:
    def __init__(self, spec: dict[str, Any]):
        info = spec.get("features_info", {})
        if set(info) - {"float_features"}:
            raise UnsupportedModelError(
                f"features other than float: {sorted(set(info) - {'float_features'})}"
            )
        floats = info.get("float_features", [])
        nan_true = {f["flat_feature_index"]: f.get("nan_value_treatment") == "AsTrue" for f in floats}
        trees = spec.get("oblivious_trees")
        if not trees:
            raise UnsupportedModelError("no oblivious trees")
        depth = max(len(t["splits"]) for t in trees)
        if depth > 8:
            raise UnsupportedModelError(f"depth {depth}: a leaf index past 8 bits")
        n = len(trees)
        feat = np.zeros((n, depth), dtype=np.int64)
        border = np.full((n, depth), np.inf, dtype=np.float32)  # padding: never true
        nan_bit = np.zeros((n, depth), dtype=bool)
        offsets = np.zeros(n, dtype=np.int64)
        leaves: list[float] = []
        for i, t in enumerate(trees):
            for d, s in enumerate(t["splits"]):
                if s.get("split_type") != "FloatFeature":
                    raise UnsupportedModelError(f"split type {s.get('split_type')}")
                feat[i, d] = s["float_feature_index"]
                border[i, d] = np.float32(s["border"])
                nan_bit[i, d] = nan_true.get(s["float_feature_index"], False)
            if len(t["leaf_values"]) != 1 << len(t["splits"]):
                raise UnsupportedModelError("a tree's leaves do not match its depth (multi-class?)")
            offsets[i] = len(leaves)
            leaves.extend(t["leaf_values"])
        scale, bias = spec.get("scale_and_bias", [1.0, [0.0]])
        if len(bias) != 1:
            raise UnsupportedModelError("more than one output dimension")
        self.n_features = max((f["flat_feature_index"] for f in floats), default=-1) + 1
        self._feat = feat.ravel()
        self._border = border.ravel()
        self._nan_bit = nan_bit.ravel()
        self._any_nan_bit = bool(nan_bit.any())
        self._shape = (n, depth)
        # uint8 bits times uint8 weights: numpy's matmul of a bool array casts it to int64 first
        self._weights = (1 << np.arange(depth, dtype=np.uint8)).astype(np.uint8)
        self._offsets = offsets
        self._leaves = np.asarray(leaves, dtype=np.float64)
        self._scale = float(scale)
        self._bias = float(bias[0])

    @classmethod
    def from_catboost(cls, model: Any) -> ObliviousTrees:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "model.json"
            model.save_model(str(path), format="json")
            return cls(json.loads(path.read_text()))

    def raw(self, x: np.ndarray) -> float:
        """The raw score (log-odds) of one row, its features in the model's order (float32, or
        float64 rounded to float32 here, as CatBoost compares them)."""
        v = x.astype(np.float32, copy=False)[self._feat]
        bits = v > self._border
        if self._any_nan_bit:
            bits |= np.isnan(v) & self._nan_bit
        leaf = bits.view(np.uint8).reshape(self._shape) @ self._weights
        return self._scale * float(self._leaves[self._offsets + leaf].sum()) + self._bias

    def probability(self, x: np.ndarray) -> float:
        return 1.0 / (1.0 + math.exp(-self.raw(x)))
