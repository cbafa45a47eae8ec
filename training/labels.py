"""The label, defined once: the sign of the forward log return over ``horizon`` bars.

For the bar at open time ``t`` with close ``c_t``: ``r = ln(c_{t + h step} / c_t)``, defined only
when the ``h`` bars after ``t`` are all there (no label across a gap; the last ``h`` bars of a
stream have none). Label 1 when ``r > dead_zone``, 0 when ``r < -dead_zone``; inside the dead
zone (``|r| <= dead_zone``, so with the default 0.0 an unchanged close) the row has no label and
is left out of training and of live calibration. ``LABEL_HORIZON_BARS`` (default 5) and
``LABEL_DEAD_ZONE`` (default 0.0, in log-return units) set them.
"""

from __future__ import annotations

import numpy as np

DEFAULT_HORIZON = 5
DEFAULT_DEAD_ZONE = 0.0


def forward_labels(
    open_times: np.ndarray,
    closes: np.ndarray,
    step_ms: int,
    horizon: int = DEFAULT_HORIZON,
    dead_zone: float = DEFAULT_DEAD_ZONE,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, forward returns) per bar of one stream sorted by open time: labels are 1.0,
    0.0 or NaN (none), returns NaN where undefined."""
    if horizon < 1:
        raise ValueError("horizon must be >= 1 bar")
    if dead_zone < 0:
        raise ValueError("dead_zone must be >= 0")
    t = np.asarray(open_times, dtype=np.int64)
    c = np.asarray(closes, dtype=np.float64)
    n = t.size
    ret = np.full(n, np.nan)
    if n > horizon:
        whole = t[horizon:] - t[:-horizon] == horizon * step_ms
        r = np.log(c[horizon:] / c[:-horizon])
        ret[:-horizon] = np.where(whole, r, np.nan)
    lab = np.full(n, np.nan)
    lab[ret > dead_zone] = 1.0
    lab[ret < -dead_zone] = 0.0
    return lab, ret
