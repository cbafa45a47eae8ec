"""Rolling features per (symbol, interval) stream: pure logic, no I/O, no Quix.

``FeatureStream.apply(candle, kind, state)`` takes one closed candle of the stream (``kind``:
``"new"``, ``"repair"`` or ``"late_fill"``, as the candle topology announced it) and returns the
feature rows it produces: one for a new bar after the newest, and for a repair or late fill the
row of the changed bar and every row whose lookback contains it, derived again, each with its
``feature_version`` one above the last emitted for that open time. The features and the gap rule
are ``indicators.definitions``. ``apply_many(candles, kinds, state)`` does the same for a batch
record of one stream and emits each affected row once. A page of at least BLOCK_MIN new bars
after the newest (a replay, an import, a rebuild) is derived column-wise with numpy
(``_derive_block``): every window sum is added in the same order as the bar-by-bar path,
logs are ``math.log`` and the recursions run bar by bar, so the values are the same bit for bit
(tested over the whole XRP dump); its rows come as a ``RowBlock`` that also carries them as
columns, which the sink inserts without reading the dicts back.

Rows are dicts: ``symbol``, ``interval``, ``open_time``, every feature of FEATURES (float or
None), ``window_complete``, ``bars_missing_in_window``, ``window_has_repair``, the bar itself
(``open`` .. ``volume``, ``bar_repaired``),
``feature_version``, ``feature_set_version``, ``reason`` and ``carry`` (the bar's carried
intermediates, see below; a sink stores it so that state can be rebuilt from the record).

A new bar's row has ``feature_version`` 1 and reason ``"new"``. Which rows a change at bar
``r`` re-derives (reason ``repair`` for revised values of a known bar; ``late_fill`` for a bar
that arrived after a later one, ``gap_repaired`` when that late fill closes its hole; the
changed bar's own row is version 1 when it is new):

- every bar in ``r .. r + (LONGEST_LOOKBACK - 1) steps`` (its window, flags and counts hold
  ``r``'s slot), and
- every later bar of ``r``'s run (EMA/Wilder carry ``r`` forward to the newest bar, or to the
  next hole, after which they re-seed).

State (one key, ``"f"``, JSON-able): the last ``ring_bars`` closed bars as columns (open time,
o/h/l/c/v, repaired flag, last emitted feature_version) and, per bar, its carry ``[pos, r1,
ema_12, ema_26, macd_signal, avg_gain, avg_loss, atr_14]`` (``pos`` its index in its run,
``r1`` its one-bar log return); ``cover``: every bar at or after that open time is in the ring
(None: the ring holds the whole stream). A change is derived in the ring when the ring covers
the LONGEST_LOOKBACK slots before it; otherwise ``apply`` returns ``NeedsHistory`` with the range
to read from the record, and ``rebuild`` makes the state from those stored bars (their candles,
flags, versions and carries) before the candle is applied again. The ring is trimmed back to
``ring_bars`` only when a new bar is appended, so the late fills that follow a rebuild find the
history it brought.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise, repeat
from operator import mul
from typing import Any, Literal

import numpy as np

from indicators.definitions import (
    ATR_14,
    EMA_12,
    EMA_26,
    FEATURE_NAMES,
    FEATURE_SET_VERSION,
    LONGEST_LOOKBACK,
    MA_20,
    MA_50,
    MACD_SIGNAL,
    RET_5,
    RET_10,
    ROLLING_VOL_20,
    ROW_FLAGS,
    RSI_14,
    VOLUME_Z_20,
    VWAP_20,
    ema_alpha,
)
from schemas.features import RowBlock
from schemas.intervals import interval_ms
from schemas.klines import Candle
from topologies.candle_logic import StreamState

CandleKind = Literal["new", "repair", "late_fill"]
KEY = "f"
#: bar columns, then the carry columns
BAR_COLS = ("t", "o", "h", "l", "c", "v", "fl", "ver")
CARRY_COLS = ("pos", "r1", "e12", "e26", "sig", "ag", "al", "atr")
COLS = BAR_COLS + CARRY_COLS
#: default ring: the longest lookback twice over, so a repair up to ~50 bars back is derived in state
RING_BARS = 2 * LONGEST_LOOKBACK + 28
#: the ring may grow this many bars past ``ring_bars`` before the oldest are dropped in one go
TRIM_SLACK = 16

_W = LONGEST_LOOKBACK
_A12 = ema_alpha(EMA_12.period)
_A26 = ema_alpha(EMA_26.period)
_A9 = ema_alpha(MACD_SIGNAL.period)
_N_RSI = RSI_14.period
_N_ATR = ATR_14.period
# first defined positions (lookback - 1)
_P_RET5 = RET_5.lookback - 1
_P_RET10 = RET_10.lookback - 1
_P_VOL = ROLLING_VOL_20.lookback - 1
_P_MA20 = MA_20.lookback - 1
_P_MA50 = MA_50.lookback - 1
_P_E12 = EMA_12.lookback - 1
_P_E26 = EMA_26.lookback - 1
_P_SIG = MACD_SIGNAL.lookback - 1
_P_RSI = RSI_14.lookback - 1
_P_ATR = ATR_14.lookback - 1
_P_VWAP = VWAP_20.lookback - 1
_P_VZ = VOLUME_Z_20.lookback - 1
_N_VOL = ROLLING_VOL_20.period
_N_VZ = VOLUME_Z_20.period
_N_VWAP = VWAP_20.period


@dataclass(frozen=True, slots=True)
class NeedsHistory:
    """The change at ``changed_open_time`` reaches further back than the state holds.

    Read the stored bars of the stream with open time in ``[from_open_time, to_open_time]``
    (their candles, repaired flags, last feature_version and carry), ``rebuild`` the state
    from them and apply the candle again."""

    symbol: str
    interval: str
    changed_open_time: int
    from_open_time: int
    to_open_time: int


@dataclass(frozen=True, slots=True)
class StoredBar:
    """A bar as the record holds it: the candle, whether it was repaired or late-filled, the
    feature_version of its last feature row and that row's ``carry``."""

    candle: Candle
    repaired: bool
    version: int
    carry: Sequence[float | int | None]


class MemoryState:
    """A ``StreamState`` in a plain dict, without serialisation: for derivations outside a
    topology (the feature rebuild, tests and benchmarks)."""

    def __init__(self) -> None:
        self.d: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.d.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.d[key] = value

    def delete(self, key: str) -> None:
        self.d.pop(key, None)


def _empty() -> dict[str, Any]:
    d: dict[str, Any] = {k: [] for k in COLS}
    d["cover"] = None
    return d


def _mean_std(xs: list[float], n: int) -> tuple[float, float]:
    """Mean and sample stdev (ddof = 1), two passes (no cancellation when the spread is small)."""
    m = sum(xs) / n
    return m, math.sqrt(sum([(x - m) * (x - m) for x in xs]) / (n - 1))


def _derive(s: dict[str, Any], i: int, step: int) -> list[Any]:
    """Derive bar ``i`` of the ring from bars ``< i``: writes its carry, returns its feature
    values in FEATURE_NAMES order, the three window flags and the carry (as ``_ROW_KEYS``)."""
    t = s["t"]
    c = s["c"]
    h = s["h"]
    lo = s["l"]
    v = s["v"]
    pos_c = s["pos"]
    ti = t[i]
    ci = c[i]
    hi = h[i]
    li = lo[i]
    vi = v[i]
    j = i - 1
    pos = pos_c[j] + 1 if i > 0 and t[j] == ti - step else 0

    r1 = ret5 = ret10 = vol = ma20 = ma50 = None
    e12 = e26 = macd = sig = ag = al = rsi = atr = vwap = vz = None
    if pos >= 1:
        cp = c[j]
        r1 = math.log(ci / cp)
        if pos >= _P_RET5:
            ret5 = math.log(ci / c[i - 5])
            if pos >= _P_RET10:
                ret10 = math.log(ci / c[i - 10])
        tr = max(hi - li, abs(hi - cp), abs(li - cp))
        d = ci - cp
        g = d if d > 0 else 0.0
        ls = -d if d < 0 else 0.0
        if pos > _P_RSI:
            ag = (s["ag"][j] * (_N_RSI - 1) + g) / _N_RSI
            al = (s["al"][j] * (_N_RSI - 1) + ls) / _N_RSI
        elif pos == _P_RSI:
            sg = sl = 0.0
            for k in range(i - _N_RSI + 1, i + 1):
                dk = c[k] - c[k - 1]
                if dk > 0:
                    sg += dk
                else:
                    sl -= dk
            ag = sg / _N_RSI
            al = sl / _N_RSI
        if ag is not None and al is not None:
            tot = ag + al
            rsi = 100.0 * ag / tot if tot > 0 else 50.0
        if pos > _P_ATR:
            atr = (s["atr"][j] * (_N_ATR - 1) + tr) / _N_ATR
        elif pos == _P_ATR:
            st = 0.0
            for k in range(i - _N_ATR + 1, i + 1):
                ck = c[k - 1]
                st += max(h[k] - lo[k], abs(h[k] - ck), abs(lo[k] - ck))
            atr = st / _N_ATR
        if pos >= _P_VOL:
            _, vol = _mean_std([*s["r1"][i - _N_VOL + 1 : i], r1], _N_VOL)
    if pos > _P_E12:
        p = s["e12"][j]
        e12 = p + _A12 * (ci - p)
    elif pos == _P_E12:
        e12 = sum(c[i - _P_E12 : i + 1]) / EMA_12.period
    if pos > _P_E26:
        p = s["e26"][j]
        e26 = p + _A26 * (ci - p)
    elif pos == _P_E26:
        e26 = sum(c[i - _P_E26 : i + 1]) / EMA_26.period
    if e12 is not None and e26 is not None:
        macd = e12 - e26
        if pos > _P_SIG:
            p = s["sig"][j]
            sig = p + _A9 * (macd - p)
        elif pos == _P_SIG:
            e12s = s["e12"]
            e26s = s["e26"]
            sm = macd
            for k in range(i - MACD_SIGNAL.period + 1, i):
                sm += e12s[k] - e26s[k]
            sig = sm / MACD_SIGNAL.period
    if pos >= _P_MA20:
        ma20 = sum(c[i - _P_MA20 : i + 1]) / MA_20.period
        if pos >= _P_MA50:
            ma50 = sum(c[i - _P_MA50 : i + 1]) / MA_50.period
    if pos >= _P_VWAP:
        k0, i1 = i - _N_VWAP + 1, i + 1
        vs = v[k0:i1]
        sv = sum(vs)
        if sv != 0:
            # sum(tp v) as three dot products: the same sum to rounding, at C speed
            spv = sum(map(mul, h[k0:i1], vs)) + sum(map(mul, lo[k0:i1], vs)) + sum(map(mul, c[k0:i1], vs))
            vwap = spv / 3.0 / sv
    if pos >= _P_VZ:
        m, sd = _mean_std(v[i - _N_VZ + 1 : i + 1], _N_VZ)
        if sd != 0:
            vz = (vi - m) / sd

    # the window of LONGEST_LOOKBACK slots ending at this bar
    fl = s["fl"]
    if pos >= _W - 1:
        missing = 0
        rep = 1 in fl[i - _W + 1 : i + 1]
    else:
        lo_t = ti - (_W - 1) * step
        k = i
        while k >= 0 and t[k] >= lo_t:
            k -= 1
        missing = _W - (i - k)
        rep = 1 in fl[k + 1 : i + 1]

    s["pos"][i] = pos
    s["r1"][i] = r1
    s["e12"][i] = e12
    s["e26"][i] = e26
    s["sig"][i] = sig
    s["ag"][i] = ag
    s["al"][i] = al
    s["atr"][i] = atr
    rng = (hi - li) / ci
    return [r1, ret5, ret10, rsi, vol, ma20, ma50, e12, e26, macd, sig, atr, vwap, vz, rng,
            missing == 0, missing, rep, [pos, r1, e12, e26, sig, ag, al, atr]]  # fmt: skip


#: a page of at least this many new bars is derived column-wise (``_derive_block``)
BLOCK_MIN = 16
_PAD = _W  # the block's arrays start this many slots before the first context bar (NaN)


def _window_sum(x: np.ndarray, n: int, a: int, b: int) -> np.ndarray:
    """``sum(x[k - n + 1 : k + 1])`` for every k in ``a .. b - 1``, added left to right as
    Python's ``sum`` adds a list (the same floats, bit for bit)."""
    acc = x[a - n + 1 : b - n + 1].copy()
    for o in range(n - 2, -1, -1):
        acc += x[a - o : b - o]
    return acc


def _window_mean_std(x: np.ndarray, n: int, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """``_mean_std`` of each window of ``n`` ending at ``a .. b - 1``, in its order of operations."""
    m = _window_sum(x, n, a, b) / n
    d = x[a - n + 1 : b - n + 1] - m
    acc = d * d
    for o in range(n - 2, -1, -1):
        d = x[a - o : b - o] - m
        acc += d * d
    return m, np.sqrt(acc / (n - 1))


def _seeding(
    p: int,
    k: int,
    x: int,
    i0: int,
    cl: list[float],
    hl: list[float],
    lol: list[float],
    g: float,
    ls: float,
    tr: float,
    prev: tuple[Any, ...],
    e12c: list[Any],
    e26c: list[Any],
    out_e12: list[Any],
    out_e26: list[Any],
) -> tuple[Any, ...]:
    """``_derive_block``'s recursions at a bar where one of them seeds or is undefined (``pos``
    ``p`` <= the signal's seed position): ``_derive``'s branches, with the previous bar's values
    in ``prev`` and bar ``k`` of the block at padded index ``x``."""  # fmt: skip
    pag, pal, patr, pe12, pe26, psig = prev
    ag = al = rsi = atr = e12 = e26 = macd = sig = None
    ci = cl[x]
    if p >= 1:
        if p > _P_RSI:
            ag = (pag * (_N_RSI - 1) + g) / _N_RSI
            al = (pal * (_N_RSI - 1) + ls) / _N_RSI
        elif p == _P_RSI:
            sg = sl = 0.0
            for q in range(x - _N_RSI + 1, x + 1):
                dq = cl[q] - cl[q - 1]
                if dq > 0:
                    sg += dq
                else:
                    sl -= dq
            ag = sg / _N_RSI
            al = sl / _N_RSI
        if ag is not None and al is not None:
            tot = ag + al
            rsi = 100.0 * ag / tot if tot > 0 else 50.0
        if p > _P_ATR:
            atr = (patr * (_N_ATR - 1) + tr) / _N_ATR
        elif p == _P_ATR:
            st = 0.0
            for q in range(x - _N_ATR + 1, x + 1):
                cq = cl[q - 1]
                hq, lq = hl[q], lol[q]
                st += max(hq - lq, abs(hq - cq), abs(lq - cq))
            atr = st / _N_ATR
    if p > _P_E12:
        e12 = pe12 + _A12 * (ci - pe12)
    elif p == _P_E12:
        e12 = sum(cl[x - _P_E12 : x + 1]) / EMA_12.period
    if p > _P_E26:
        e26 = pe26 + _A26 * (ci - pe26)
    elif p == _P_E26:
        e26 = sum(cl[x - _P_E26 : x + 1]) / EMA_26.period
    if e12 is not None and e26 is not None:
        macd = e12 - e26
        if p > _P_SIG:
            sig = psig + _A9 * (macd - psig)
        elif p == _P_SIG:
            sm = macd
            i = i0 + k
            for q in range(i - MACD_SIGNAL.period + 1, i):
                if q >= i0:
                    sm += out_e12[q - i0] - out_e26[q - i0]
                else:
                    sm += e12c[q] - e26c[q]
            sig = sm / MACD_SIGNAL.period
    return ag, al, rsi, atr, e12, e26, macd, sig


def _masked(x: np.ndarray, keep: np.ndarray) -> list[Any]:
    """``x`` as a list of floats, None where not ``keep``."""
    o = x.astype(object)
    o[~keep] = None
    out: list[Any] = o.tolist()
    return out


def _derive_block(s: dict[str, Any], i0: int, step: int) -> list[list[Any]]:
    """``_derive`` of every bar ``i0 ..`` of the ring at once (a page of new bars): the same
    values bit for bit (each sum in the same order, ``math.log``, the recursions bar by bar),
    returned as columns in ``_ROW_KEYS`` order; writes the carries."""
    t = s["t"]
    n = len(t)
    base = max(0, i0 - _W)
    m = n - base  # local slots; the derived ones are a .. b - 1 of the padded arrays
    a, b = _PAD + i0 - base, _PAD + m
    nan = math.nan

    def arr(col: list[Any]) -> np.ndarray:
        out = np.full(_PAD + m, nan)
        out[_PAD:] = [nan if x is None else x for x in col[base:]]
        return out

    c, h, lo, v = arr(s["c"]), arr(s["h"]), arr(s["l"]), arr(s["v"])
    cl, hl, lol = c.tolist(), h.tolist(), lo.tolist()
    # run positions, carried from the bar before the page
    pos_c = s["pos"]
    pos: list[Any] = []
    prev = pos_c[i0 - 1] if i0 > 0 else None
    pt = t[i0 - 1] if i0 > 0 else None
    for i in range(i0, n):
        ti = t[i]
        p = prev + 1 if prev is not None and pt == ti - step else 0
        pos.append(p)
        prev, pt = p, ti
    pa_ = np.array(pos, dtype=np.float64)

    with np.errstate(all="ignore"):
        cp = c[a - 1 : b - 1]
        ci, hi, li = c[a:b], h[a:b], lo[a:b]
        r1 = np.array(list(map(math.log, (ci / cp).tolist())))
        r1_all = arr(s["r1"])
        r1_all[a:b] = np.where(pa_ >= 1, r1, nan)
        r1l = _masked(r1, pa_ >= 1)
        tr = np.maximum(np.maximum(hi - li, np.abs(hi - cp)), np.abs(li - cp)).tolist()
        d = ci - cp
        gl = np.where(d > 0, d, 0.0).tolist()
        ll = np.where(d < 0, -d, 0.0).tolist()
        ret5l = _masked(np.array(list(map(math.log, (ci / c[a - 5 : b - 5]).tolist()))), pa_ >= _P_RET5)
        ret10l = _masked(np.array(list(map(math.log, (ci / c[a - 10 : b - 10]).tolist()))), pa_ >= _P_RET10)
        _, vol = _window_mean_std(r1_all, _N_VOL, a, b)
        ma20 = _window_sum(c, MA_20.period, a, b) / MA_20.period
        ma50 = _window_sum(c, MA_50.period, a, b) / MA_50.period
        sv = _window_sum(v, _N_VWAP, a, b)
        spv = _window_sum(h * v, _N_VWAP, a, b) + _window_sum(lo * v, _N_VWAP, a, b)
        spv = spv + _window_sum(c * v, _N_VWAP, a, b)
        vwap = spv / 3.0 / sv
        vm, vsd = _window_mean_std(v, _N_VZ, a, b)
        vz = (v[a:b] - vm) / vsd
        rng = ((hi - li) / ci).tolist()

    vol_l = _masked(vol, pa_ >= _P_VOL)
    ma20_l = _masked(ma20, pa_ >= _P_MA20)
    ma50_l = _masked(ma50, pa_ >= _P_MA50)
    vwap_l = _masked(vwap, (pa_ >= _P_VWAP) & (sv != 0))
    vz_l = _masked(vz, (pa_ >= _P_VZ) & (vsd != 0))

    # the recursions, bar by bar, in _derive's expressions; the previous bar's values in locals
    e12c, e26c, sigc, agc, alc, atrc = s["e12"], s["e26"], s["sig"], s["ag"], s["al"], s["atr"]
    if i0 > 0:
        pag, pal, patr = agc[i0 - 1], alc[i0 - 1], atrc[i0 - 1]
        pe12, pe26, psig = e12c[i0 - 1], e26c[i0 - 1], sigc[i0 - 1]
    else:
        pag = pal = patr = pe12 = pe26 = psig = None
    out_ag: list[Any] = []
    out_al: list[Any] = []
    out_atr: list[Any] = []
    out_e12: list[Any] = []
    out_e26: list[Any] = []
    out_sig: list[Any] = []
    rsi_l: list[Any] = []
    macd_l: list[Any] = []
    for k, p in enumerate(pos):
        ci_ = cl[a + k]
        if p > _P_SIG:  # every recursion continues (the common case)
            ag = (pag * (_N_RSI - 1) + gl[k]) / _N_RSI
            al = (pal * (_N_RSI - 1) + ll[k]) / _N_RSI
            tot = ag + al
            rsi = 100.0 * ag / tot if tot > 0 else 50.0
            atr = (patr * (_N_ATR - 1) + tr[k]) / _N_ATR
            e12 = pe12 + _A12 * (ci_ - pe12)
            e26 = pe26 + _A26 * (ci_ - pe26)
            macd = e12 - e26
            sig = psig + _A9 * (macd - psig)
        else:
            ag, al, rsi, atr, e12, e26, macd, sig = _seeding(
                p, k, a + k, i0, cl, hl, lol, gl[k], ll[k], tr[k], (pag, pal, patr, pe12, pe26, psig),
                e12c, e26c, out_e12, out_e26,
            )  # fmt: skip
        out_ag.append(ag)
        out_al.append(al)
        out_atr.append(atr)
        out_e12.append(e12)
        out_e26.append(e26)
        out_sig.append(sig)
        rsi_l.append(rsi)
        macd_l.append(macd)
        pag, pal, patr, pe12, pe26, psig = ag, al, atr, e12, e26, sig
    agc[i0:], alc[i0:], atrc[i0:] = out_ag, out_al, out_atr
    e12c[i0:], e26c[i0:], sigc[i0:] = out_e12, out_e26, out_sig

    # window flags: a bar with a whole window has none missing; the rest as _derive counts them
    fl = s["fl"]
    flc = np.cumsum(np.array([0, *fl[base:]], dtype=np.int64))  # flc[q]: flags before local q
    full = pa_ >= _W - 1
    ends = np.arange(i0 - base + 1, n - base + 1)  # flc index just after each bar
    complete: list[bool] = full.tolist()
    missing: list[int] = [0] * (n - i0)
    rep: list[bool] = (flc[ends] - flc[np.maximum(ends - _W, 0)] > 0).tolist()
    for k in np.flatnonzero(~full).tolist():
        i = i0 + k
        lo_t = t[i] - (_W - 1) * step
        q = i
        while q >= 0 and t[q] >= lo_t:
            q -= 1
        miss = _W - (i - q)
        complete[k] = miss == 0
        missing[k] = miss
        rep[k] = 1 in fl[q + 1 : i + 1]
    s["pos"][i0:] = pos
    s["r1"][i0:] = r1l
    carry = [list(x) for x in zip(pos, r1l, out_e12, out_e26, out_sig, out_ag, out_al, out_atr, strict=True)]
    return [r1l, ret5l, ret10l, rsi_l, vol_l, ma20_l, ma50_l, out_e12, out_e26, macd_l, out_sig, out_atr,
            vwap_l, vz_l, rng, complete, missing, rep, carry]  # fmt: skip


_ROW_KEYS = (*FEATURE_NAMES, *ROW_FLAGS, "carry")
_BLOCK_KEYS = (*_ROW_KEYS, "symbol", "interval", "open_time", "open", "high", "low", "close", "volume",
               "bar_repaired", "feature_version", "feature_set_version", "reason")  # fmt: skip


class FeatureStream:
    """Feature rows of one stream kind (all streams share one instance; the state is per key)."""

    def __init__(self, ring_bars: int = RING_BARS):
        if ring_bars < LONGEST_LOOKBACK + 1:
            raise ValueError(f"ring_bars={ring_bars} must exceed LONGEST_LOOKBACK={LONGEST_LOOKBACK}")
        self.ring_bars = ring_bars

    def _row(self, c: Candle, s: dict[str, Any], i: int, vals: list[Any], reason: str) -> dict[str, Any]:
        row: dict[str, Any] = dict(zip(_ROW_KEYS, vals, strict=True))
        row["symbol"] = c.symbol
        row["interval"] = c.interval
        row["open_time"] = s["t"][i]
        row["open"] = s["o"][i]
        row["high"] = s["h"][i]
        row["low"] = s["l"][i]
        row["close"] = s["c"][i]
        row["volume"] = s["v"][i]
        row["bar_repaired"] = s["fl"][i] == 1
        row["feature_version"] = s["ver"][i]
        row["feature_set_version"] = FEATURE_SET_VERSION
        row["reason"] = reason
        return row

    def _rows_block(
        self, c0: Candle, s: dict[str, Any], i0: int, step: int, reasons: Sequence[str]
    ) -> RowBlock:
        """The rows of bars ``i0 ..`` of the ring (``_derive_block``), as ``_row`` makes them."""
        n = len(s["t"]) - i0
        one = [c0.symbol], [c0.interval], [FEATURE_SET_VERSION]  # one value for every row
        cols: list[Sequence[Any]] = [
            *_derive_block(s, i0, step), one[0], one[1], s["t"][i0:], s["o"][i0:], s["h"][i0:],
            s["l"][i0:], s["c"][i0:], s["v"][i0:], [f == 1 for f in s["fl"][i0:]], s["ver"][i0:],
            one[2], reasons,
        ]  # fmt: skip
        each = [repeat(c[0], n) if any(c is o for o in one) else c for c in cols]
        block = RowBlock(dict(zip(_BLOCK_KEYS, vals, strict=True)) for vals in zip(*each, strict=True))
        block.columns = dict(zip(_BLOCK_KEYS, cols, strict=True))
        return block

    def apply(self, c: Candle, kind: CandleKind, state: StreamState) -> list[dict[str, Any]] | NeedsHistory:
        s = state.get(KEY) or _empty()
        step = interval_ms(c.interval)
        t = s["t"]
        ot = c.open_time
        flag = 0 if kind == "new" else 1
        if not t or ot > t[-1]:
            t.append(ot)
            s["o"].append(c.open)
            s["h"].append(c.high)
            s["l"].append(c.low)
            s["c"].append(c.close)
            s["v"].append(c.volume)
            s["fl"].append(flag)
            s["ver"].append(1)
            for k in CARRY_COLS:  # written by _derive
                s[k].append(None)
            i = len(t) - 1
            rows = [self._row(c, s, i, _derive(s, i, step), kind)]
            self._trim(s, step)
            state.set(KEY, s)
            return rows

        return self.apply_many([c], [kind], state, s)

    def apply_many(
        self,
        candles: Sequence[Candle],
        kinds: Sequence[CandleKind],
        state: StreamState,
        loaded: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]] | NeedsHistory:
        """Several closed candles of one stream (a batch record) at once, ``kinds[i]`` for
        ``candles[i]``: the same final rows as applying them one by one, but every affected row
        is derived and emitted once (``feature_version`` + 1 once; reason of the newest change,
        in arrival order, that reaches it), in open-time order. A backfill page of late fills
        costs one pass instead of one re-derivation per candle. ``NeedsHistory`` (nothing
        applied) when any candle changes a bar older than the ring covers."""
        if not candles:
            return []
        s = loaded if loaded is not None else state.get(KEY) or _empty()
        c0 = candles[0]
        step = interval_ms(c0.interval)
        t = s["t"]
        if (not t or c0.open_time > t[-1]) and all(a.open_time < b.open_time for a, b in pairwise(candles)):
            return self._append_in_order(candles, kinds, state, s, step)
        cover = s["cover"]
        if cover is not None and t:
            old = [c.open_time for c in candles if c.open_time <= t[-1] and cover > c.open_time - _W * step]
            if old:
                ot = min(old)
                return NeedsHistory(c0.symbol, c0.interval, ot, ot - _W * step, t[-1])
        o_, h_, l_, c_, v_, fl, ver = s["o"], s["h"], s["l"], s["c"], s["v"], s["fl"], s["ver"]
        own: dict[int, str] = {}  # reason of each touched bar's own row
        changes: list[tuple[int, int, str]] = []  # (open time, arrival, reason) of repairs, late fills
        appended = False
        for seq, (c, kind) in enumerate(zip(candles, kinds, strict=True)):
            ot = c.open_time
            if not t or ot > t[-1]:
                for col, x in zip(BAR_COLS, (ot, c.open, c.high, c.low, c.close, c.volume,
                                            0 if kind == "new" else 1, 0), strict=True):  # fmt: skip
                    s[col].append(x)
                for col in CARRY_COLS:
                    s[col].append(None)
                own[ot] = kind
                appended = True
                continue
            idx = bisect.bisect_left(t, ot)
            if t[idx] == ot:
                if (o_[idx], h_[idx], l_[idx], c_[idx], v_[idx]) == (
                    c.open,
                    c.high,
                    c.low,
                    c.close,
                    c.volume,
                ):
                    continue
                reason = "repair"
                o_[idx], h_[idx], l_[idx], c_[idx], v_[idx] = c.open, c.high, c.low, c.close, c.volume
                fl[idx] = 1
            else:
                for col, x in zip(
                    BAR_COLS, (ot, c.open, c.high, c.low, c.close, c.volume, 1, 0), strict=True
                ):
                    s[col].insert(idx, x)
                for col in CARRY_COLS:
                    s[col].insert(idx, None)
                before = idx > 0 and t[idx - 1] == ot - step
                reason = "gap_repaired" if before and t[idx + 1] == ot + step else "late_fill"
            own[ot] = reason
            changes.append((ot, seq, reason))
        if not own:
            return []

        # one pass from the earliest touched bar: a bar is derived when it is touched, or in the
        # 50 slots of a change, or in the run of one (EMA/Wilder carry it); others keep their carry
        changes.sort()
        last = max(own)
        window: deque[tuple[int, int, str]] = deque()
        run: tuple[int, str] | None = None  # (arrival, reason) of the newest change carried here
        nc = 0
        rows: list[dict[str, Any]] = []
        for i in range(bisect.bisect_left(t, min(own)), len(t)):
            ti = t[i]
            if run is not None and t[i - 1] != ti - step:
                run = None
            while nc < len(changes) and changes[nc][0] <= ti:
                ch = changes[nc]
                nc += 1
                window.append(ch)
                if run is None or ch[1] > run[0]:
                    run = (ch[1], ch[2])
            while window and window[0][0] < ti - (_W - 1) * step:
                window.popleft()
            why = own.get(ti)
            if why is None:
                if not window and run is None:
                    if nc == len(changes) and ti > last:
                        break
                    continue
                newest = max((ch[1], ch[2]) for ch in window) if window else (-1, "")
                if run is not None and run[0] > newest[0]:
                    newest = run
                why = newest[1]
            ver[i] += 1  # a bar first seen in this batch holds 0: its first row is version 1
            rows.append(self._row(c0, s, i, _derive(s, i, step), why))
        if appended:
            # only on new bars: after a rebuild the ring keeps the history it was given until the
            # next new bar, so a backfill's late fills in a row need one rebuild, not one each
            self._trim(s, step)
        state.set(KEY, s)
        return rows

    def _append_in_order(
        self,
        candles: Sequence[Candle],
        kinds: Sequence[CandleKind],
        state: StreamState,
        s: dict[str, Any],
        step: int,
    ) -> list[dict[str, Any]]:
        """New bars after the newest, in open-time order (a replay's or an import's page):
        each is appended and derived once, as ``apply`` does one by one. A page of BLOCK_MIN
        or more is derived column-wise (``_derive_block``, the same values bit for bit) and
        returned as a ``RowBlock``."""
        t, o_, h_, l_, c_, v_, fl, ver = s["t"], s["o"], s["h"], s["l"], s["c"], s["v"], s["fl"], s["ver"]
        carries = [s[k] for k in CARRY_COLS]
        if len(candles) >= BLOCK_MIN:
            i0 = len(t)
            t.extend([c.open_time for c in candles])
            o_.extend([c.open for c in candles])
            h_.extend([c.high for c in candles])
            l_.extend([c.low for c in candles])
            c_.extend([c.close for c in candles])
            v_.extend([c.volume for c in candles])
            fl.extend([0 if k == "new" else 1 for k in kinds])
            ver.extend([1] * len(candles))
            for col in carries:
                col.extend([None] * len(candles))
            block = self._rows_block(candles[0], s, i0, step, kinds)
            self._trim(s, step)
            state.set(KEY, s)
            return block
        rows = []
        row = self._row
        for c, kind in zip(candles, kinds, strict=True):
            t.append(c.open_time)
            o_.append(c.open)
            h_.append(c.high)
            l_.append(c.low)
            c_.append(c.close)
            v_.append(c.volume)
            fl.append(0 if kind == "new" else 1)
            ver.append(1)
            for col in carries:
                col.append(None)
            i = len(t) - 1
            rows.append(row(c, s, i, _derive(s, i, step), kind))
        self._trim(s, step)
        state.set(KEY, s)
        return rows

    def _trim(self, s: dict[str, Any], step: int) -> None:
        """Keep the newest ``ring_bars``; done once TRIM_SLACK bars over, not on every bar."""
        drop = len(s["t"]) - self.ring_bars
        if drop >= TRIM_SLACK:
            s["cover"] = s["t"][drop - 1] + step
            for k in COLS:
                del s[k][:drop]


def rebuild(bars: Sequence[StoredBar], from_open_time: int | None, state: StreamState) -> None:
    """Make the state of a stream from its stored bars (sorted by open time): every stored bar
    at or after ``from_open_time`` (None: from the stream's first bar), with its flags, last
    feature_version and carry. The ring then covers ``from_open_time`` onwards."""
    s = _empty()
    for b in bars:
        c = b.candle
        for k, x in zip(BAR_COLS, (c.open_time, c.open, c.high, c.low, c.close, c.volume,
                                   int(b.repaired), b.version), strict=True):  # fmt: skip
            s[k].append(x)
        for k, carried in zip(CARRY_COLS, b.carry, strict=True):
            s[k].append(carried)
    s["cover"] = from_open_time
    state.set(KEY, s)


def replay(
    candles: Sequence[Candle],
    repaired: Collection[int],
    versions: Mapping[int, int],
    state: StreamState,
    ring_bars: int = RING_BARS,
) -> list[dict[str, Any]]:
    """Make the state of a stream from stored candles alone (no carries), deriving every bar:
    exact when ``candles[0]`` starts a run (the stream's first bar, or the first after a hole),
    where the recursive features seed. ``repaired``: open times of repaired or late-filled
    bars; ``versions``: the last feature_version per open time (absent: 0). Returns the rows
    as derived (with those versions, reason ``"replay"``), for checking against the record."""
    s = _empty()
    if not candles:
        state.set(KEY, s)
        return []
    step = interval_ms(candles[0].interval)
    fs = FeatureStream(ring_bars)
    rows = []
    for i, c in enumerate(candles):
        for k, x in zip(BAR_COLS, (c.open_time, c.open, c.high, c.low, c.close, c.volume,
                                   int(c.open_time in repaired), versions.get(c.open_time, 0)),
                        strict=True):  # fmt: skip
            s[k].append(x)
        for k in CARRY_COLS:
            s[k].append(None)
        rows.append(fs._row(c, s, i, _derive(s, i, step), "replay"))
    # the slot before the first candle is known empty, so every bar from it on is in the ring
    s["cover"] = candles[0].open_time - step
    fs._trim(s, step)
    state.set(KEY, s)
    return rows


def ring_bars(state: StreamState) -> list[StoredBar]:
    """The bars the state of a stream holds, as ``StoredBar`` (to extend it with older ones)."""
    s = state.get(KEY)
    if not s:
        return []
    out = []
    for i, ot in enumerate(s["t"]):
        c = Candle("", "", ot, 0, s["o"][i], s["h"][i], s["l"][i], s["c"][i], s["v"][i],
                   None, None, None, None, True)  # fmt: skip
        out.append(StoredBar(c, s["fl"][i] == 1, s["ver"][i], [s[k][i] for k in CARRY_COLS]))
    return out


def ring_cover(state: StreamState) -> tuple[int | None, int | None]:
    """(oldest open time in the ring, ``cover``) of a stream's state; (None, None) when empty."""
    s = state.get(KEY)
    if not s or not s["t"]:
        return None, None
    return s["t"][0], s["cover"]
