"""The time-ordered train/validation split, purged so that no label crosses it.

Rows sorted by open time; the first ``1 - validation_fraction`` of them are the training
candidates and the rest the validation rows. A training row's label looks ``horizon`` bars
ahead, so a training row whose label window ``(t, t + horizon step]`` reaches the first
validation bar is dropped (purged): no training label is computed from validation-period
prices, and every validation row and its label window lie after every training row.
"""

from __future__ import annotations

import numpy as np


def time_split(
    open_times: np.ndarray, step_ms: int, horizon: int, validation_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices) into ``open_times`` (sorted ascending)."""
    if not 0 < validation_fraction < 1:
        raise ValueError("validation_fraction must be in (0, 1)")
    t = np.asarray(open_times, dtype=np.int64)
    n = t.size
    k = int(n * (1 - validation_fraction))
    if k < 1 or k >= n:
        raise ValueError(f"{n} rows are too few to split {validation_fraction:.0%} off for validation")
    first_val = t[k]
    train = np.flatnonzero(t[:k] + horizon * step_ms < first_val)
    return train, np.arange(k, n)
