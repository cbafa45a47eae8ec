"""Feature drift of a stream: its newest window of feature rows against the window before it.

For each feature, over rows whose ``window_complete`` is true (an incomplete window has null
or gap-shaped features and is never part of a comparison):

- ``recent``: the newest ``window`` rows, ``reference``: the ``window`` rows before them;
- ``z = (mean(recent) - mean(reference)) / (std(reference) / sqrt(n_recent))``: the recent
  mean in standard errors of the reference (``std`` the sample standard deviation, ddof 1;
  only non-null values count, and a feature needs at least 2 values on each side);
- drifted when ``|z| > threshold``. A reference with zero spread gives ``z`` null and drifted
  when the means differ at all.

Fewer than ``2 * window`` complete rows: status ``insufficient`` and no per-feature figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from indicators.definitions import FEATURE_NAMES

Status = Literal["ok", "drift", "insufficient"]


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    name: str
    recent_mean: float | None
    reference_mean: float | None
    reference_std: float | None
    recent_n: int
    reference_n: int
    z: float | None
    drifted: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "recent_mean": self.recent_mean, "reference_mean": self.reference_mean,
            "reference_std": self.reference_std, "recent_n": self.recent_n,
            "reference_n": self.reference_n, "z": self.z, "drifted": self.drifted,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class DriftReport:
    status: Status
    window: int
    threshold: float
    rows: int
    recent_span: tuple[int, int] | None
    reference_span: tuple[int, int] | None
    features: tuple[FeatureDrift, ...]

    @property
    def drifted(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def _one(name: str, recent: Sequence[float], reference: Sequence[float], threshold: float) -> FeatureDrift:
    if len(recent) < 2 or len(reference) < 2:
        return FeatureDrift(name, None, None, None, len(recent), len(reference), None, False)
    r_mean, _ = _mean_std(recent)
    ref_mean, ref_std = _mean_std(reference)
    if ref_std == 0.0:
        z = None
        drifted = r_mean != ref_mean
    else:
        z = (r_mean - ref_mean) / (ref_std / math.sqrt(len(recent)))
        drifted = abs(z) > threshold
    return FeatureDrift(name, r_mean, ref_mean, ref_std, len(recent), len(reference), z, drifted)


def feature_drift(rows: Sequence[Mapping[str, Any]], window: int, threshold: float) -> DriftReport:
    """Drift over ``rows`` (feature rows ascending by ``open_time``; incomplete windows are
    skipped here, so a caller may pass them)."""
    if window < 2:
        raise ValueError(f"window must be at least 2 rows, got {window}")
    complete = [r for r in rows if r["window_complete"]]
    if len(complete) < 2 * window:
        return DriftReport("insufficient", window, threshold, len(complete), None, None, ())
    return drift_between(complete[-window:], complete[-2 * window : -window], threshold)


def drift_between(
    recent: Sequence[Mapping[str, Any]],
    reference: Sequence[Mapping[str, Any]],
    threshold: float,
    names: Sequence[str] = FEATURE_NAMES,
) -> DriftReport:
    """Drift of ``recent`` rows against ``reference`` rows (both ascending by open time, complete
    windows only: incomplete ones are dropped here), the z of the module docstring per feature
    in ``names``. Used with a pinned reference too: the production model's training rows."""
    recent = [r for r in recent if r["window_complete"]]
    reference = [r for r in reference if r["window_complete"]]
    if len(recent) < 2 or len(reference) < 2:
        return DriftReport(
            "insufficient", len(recent), threshold, len(recent) + len(reference), None, None, ()
        )
    features = tuple(
        _one(
            name,
            [r[name] for r in recent if r[name] is not None],
            [r[name] for r in reference if r[name] is not None],
            threshold,
        )
        for name in names
    )
    return DriftReport(
        "drift" if any(f.drifted for f in features) else "ok",
        len(recent),
        threshold,
        len(recent) + len(reference),
        (int(recent[0]["open_time"]), int(recent[-1]["open_time"])),
        (int(reference[0]["open_time"]), int(reference[-1]["open_time"])),
        features,
    )
