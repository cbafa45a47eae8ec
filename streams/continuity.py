"""Continuity: which bars of a (symbol, interval) stream are stored, computed inside ClickHouse.

``scan(client, symbol, interval, ...)`` answers, for a window, how many bars were expected, how
many closed bars are stored, the completeness ratio, every missing range (first and last missing
open time, missing bars) and the largest gap. One query does it: a ``lagInFrame`` window
function over ``open_time`` (read in table order, the sorting key is ``(symbol, interval,
open_time)``) gives each stored bar its distance to the previous one; a distance of more than
one step is a hole. Only the aggregates and the holes leave ClickHouse, never a candle row.

Existence, not content: any closed row at an open time means the bar is present, so no FINAL is
needed. Rows that ReplacingMergeTree has not merged yet (an import and a websocket close of the
same bar) sit next to each other in ``open_time`` order with distance 0 and are counted once.

The window (``scan_window``): ``days`` (default 365) ending now, ``days=None`` for the whole
stored span, or explicit bounds ``start_ms``/``end_ms`` (``[start, end)``: bars opening at or
after start and before end). Only bars that have closed by ``now`` are expected; open times are
aligned to the interval (Binance's alignment, weeks on Monday). Each edge of the scanned span is
either given or stored:

- **Stored edge** (``days``, ``days=None``, or a bound not given): the span starts at the first
  (ends at the last) stored bar inside the window; holes before the first and after the last bar
  are not counted. A stream that starts mid-window or lags a little is not reported as broken;
  the live topology reports those holes itself when the next candle arrives. ``days=None`` with
  no bounds is the whole stored span, first to last stored closed bar.
- **Given edge** (``start_ms`` and/or ``end_ms``): every aligned bar from that bound is
  expected, so the leading hole (start to the first stored bar) or the trailing hole (last stored
  bar to end, or to now) is reported as a missing range too; a window with both bounds given and
  no stored bar is one hole. A given start may not open more than ``MAX_SCAN_BARS`` bars before
  the span's end (a start in 1970 would otherwise queue a 56-year hole): ``ScanRangeError``.

The report says which span it covers: ``span_from_ms``/``span_to_ms``, the open times of the
first and last expected bar (None when nothing was expected).

``queue_missing(client, report)`` turns a report's missing ranges into ``gap_segments`` rows
(state ``open``) for the gap orchestrator, without duplicating what a segment already answers
for; see its docstring for the merge rule. ``ContinuityScheduler`` runs the scans periodically
and keeps the ``ohlcv_completeness_ratio``, ``ohlcv_missing_bars`` and
``ohlcv_gap_open_segments`` gauges current. Values are bound parameters, never interpolated.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from clickhouse_connect.driver.client import Client
from prometheus_client import Gauge

from ohlcv.errors import ClickHouseUnavailableError, OhlcvError
from schemas.intervals import bucket_start, interval_ms

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
#: a window of the scheduler: whole days ending now, or ``"all"``, the whole stored span
Window = int | Literal["all"]
#: the windows the scheduler keeps gauges for, in days
DEFAULT_WINDOWS_DAYS: tuple[Window, ...] = (1, 30, 365)
#: the most bars a scan with a given start expects: 20 years of 1m
MAX_SCAN_BARS = 20 * 365 * 1440
#: the last millisecond ClickHouse DateTime64(3) holds (2299-12-31T23:59:59.999Z)
MAX_TIME_MS = 10_413_791_999_999
#: epoch values below this are taken for seconds, not ms (1973-03-03 in ms)
_MIN_PLAUSIBLE_MS = 100_000_000_000
#: effective segment states that still wait for a repair (exchange_gap is final, not waiting)
WAITING_STATES: tuple[str, ...] = ("open", "repairing", "failed")

COMPLETENESS = Gauge(
    "ohlcv_completeness_ratio",
    "Stored closed bars / expected bars over the window (NaN: no closed bar in the window)",
    ["symbol", "interval", "window"],
)
MISSING_BARS = Gauge(
    "ohlcv_missing_bars",
    "Expected bars that are not stored, over the window",
    ["symbol", "interval", "window"],
)
OPEN_SEGMENTS = Gauge(
    "ohlcv_gap_open_segments",
    "Gap segments still waiting for a repair (effective state open, repairing or failed)",
    ["symbol", "interval"],
)

_SCAN_SQL = """
SELECT
    countIf(d > 0) AS present,
    toUnixTimestamp64Milli(min(open_time)) AS first_ms,
    toUnixTimestamp64Milli(max(open_time)) AS last_ms,
    countIf(d > {step:Int64}) AS gaps,
    sumIf(intDiv(d, {step:Int64}) - 1, d > {step:Int64}) AS missing,
    max(if(d > {step:Int64}, intDiv(d, {step:Int64}) - 1, 0)) AS largest,
    arraySlice(
        arraySort(groupArrayIf((t - d + {step:Int64}, t - {step:Int64}), d > {step:Int64})), 1, {n:UInt32}
    ) AS holes
FROM
(
    SELECT
        open_time,
        toUnixTimestamp64Milli(open_time) AS t,
        t - toUnixTimestamp64Milli(
            lagInFrame(open_time, 1, open_time - toIntervalMillisecond({step:Int64}))
                OVER (ORDER BY open_time ASC ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
        ) AS d
    FROM ohlcv_candles
    WHERE symbol = {symbol:String} AND interval = {interval:String} AND is_closed
      AND open_time >= fromUnixTimestamp64Milli({lo:Int64})
      AND open_time <= fromUnixTimestamp64Milli({hi:Int64})
)
"""

_SEGMENT_COLUMNS = [
    "symbol", "interval", "segment_id", "segment_end", "from_open_time", "to_open_time",
    "missing_bars", "state", "detected_at", "repaired_at", "updated_at", "version",
]  # fmt: skip
_NO_LIMIT = 2**32 - 1


class ContinuityError(OhlcvError):
    """A continuity scan or a queueing write failed; the message names the stream and table."""


class ScanRangeError(ContinuityError):
    """A scan window that cannot be scanned; ``field`` (``from`` or ``to``) names the bound at fault.

    The message leaves the field out, so the CLI can say ``--from`` and the API ``from``."""

    def __init__(self, field: Literal["from", "to"], reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _now_ms() -> int:
    return int(time.time() * 1000)


def iso_ms(ms: int) -> str:
    """``ms`` since epoch as UTC ISO 8601 to the second (``2021-04-02T00:00:00Z``)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time_ms(text: str) -> int:
    """Epoch ms (``1617321600000``) or an ISO 8601 date/time (``2021-03-01``, ``2021-03-01T12:00``,
    with ``Z`` or an offset; none means UTC) as ms since epoch. ValueError says what is wrong."""
    value = text.strip()
    if value.isdigit():
        ms = int(value)
        if ms < _MIN_PLAUSIBLE_MS:
            raise ValueError(
                f"{value!r} is before 1973 as epoch ms; epoch seconds? give milliseconds ({ms * 1000})"
            )
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is neither epoch ms nor an ISO date/time like 2021-03-01 or 2021-03-01T12:00"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        ms = int(moment.timestamp() * 1000)
        if ms < 0:
            raise ValueError(f"{value!r} is before 1970-01-01")
    if ms > MAX_TIME_MS:
        raise ValueError(f"{value!r} is after 2299-12-31, the last time ClickHouse stores")
    return ms


@dataclass(frozen=True, slots=True)
class ScanWindow:
    """Which stored bars a scan reads (``lo`` .. ``hi``, aligned open times, inclusive) and which
    edges are given (their holes count) rather than stored; see the module docstring."""

    interval: str
    lo: int
    hi: int
    #: the window as asked, ``[start_ms, end_ms)``; None: that edge is the stored one, unlimited
    start_ms: int | None
    end_ms: int | None
    start_given: bool
    end_given: bool


def scan_window(
    interval: str,
    *,
    days: float | None = 365,
    start_ms: int | None = None,
    end_ms: int | None = None,
    now_ms: int | None = None,
) -> ScanWindow:
    """The window of a scan; ScanRangeError when start is not before end or opens more than
    ``MAX_SCAN_BARS`` bars before the span's end. ``days`` counts only without bounds."""
    step = interval_ms(interval)
    now = _now_ms() if now_ms is None else now_ms
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise ScanRangeError(
            "from", f"{iso_ms(start_ms)} is not before to ({iso_ms(end_ms)}): the window would be empty"
        )
    start, end = start_ms, end_ms
    if start_ms is None and end_ms is None and days is not None:
        start, end = max(0, now - int(days * DAY_MS)), now
    lo = bucket_start((start or 0) + step - 1, interval)  # first aligned open time >= start
    top = now if end is None else min(end, now)
    hi = bucket_start(min(top - 1, now - step), interval)  # last bar opening before end, closed by now
    if start_ms is not None and (hi - lo) // step + 1 > MAX_SCAN_BARS:
        until = "to" if end_ms is not None and end_ms <= now else "now"
        raise ScanRangeError(
            "from",
            f"{iso_ms(start_ms)} .. {until} is {(hi - lo) // step + 1:,} bars of {interval}, more than "
            f"the {MAX_SCAN_BARS:,} (20 years of 1m) one scan covers; start later, or give no start "
            "to begin at the first stored bar",
        )
    return ScanWindow(
        interval=interval, lo=lo, hi=hi, start_ms=start, end_ms=end,
        start_given=start_ms is not None, end_given=end_ms is not None,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class MissingRange:
    """Bars ``from_open_time`` .. ``to_open_time`` (open times in ms, inclusive) are not stored."""

    from_open_time: int
    to_open_time: int
    missing_bars: int

    def to_json(self) -> dict[str, int]:
        return {
            "from_open_time": self.from_open_time,
            "to_open_time": self.to_open_time,
            "missing_bars": self.missing_bars,
        }


@dataclass(frozen=True)
class ContinuityReport:
    """The continuity of one stream over one window; see the module docstring."""

    symbol: str
    interval: str
    #: the window asked for, ``[window_start_ms, window_end_ms)``; None: that edge is the stored
    #: one (``days=None``, or a bound not given)
    window_start_ms: int | None
    window_end_ms: int | None
    #: the leading (trailing) hole is counted: the start (end) was given
    start_given: bool
    end_given: bool
    expected_bars: int
    present_bars: int
    #: every missing range (up to ``max_ranges``), ascending
    missing: tuple[MissingRange, ...]
    #: number of missing ranges, also when ``missing`` was cut at ``max_ranges``
    gap_count: int
    missing_bars: int
    largest_gap_bars: int
    #: first and last stored closed bar in the window
    first_open_time: int | None
    last_open_time: int | None
    #: the scanned span: open times of the first and last expected bar (None: nothing expected)
    span_from_ms: int | None = None
    span_to_ms: int | None = None
    elapsed_ms: float = 0.0

    @property
    def bounded(self) -> bool:
        """A bound was given: its edge's hole counts."""
        return self.start_given or self.end_given

    @property
    def completeness_ratio(self) -> float | None:
        """present / expected; None when nothing was expected (no closed bar in the window)."""
        return self.present_bars / self.expected_bars if self.expected_bars else None

    @property
    def scanned_days(self) -> float:
        """The window's length in days; with a stored edge, the scanned span's (0 when empty)."""
        if self.window_start_ms is not None and self.window_end_ms is not None:
            return (self.window_end_ms - self.window_start_ms) / DAY_MS
        if self.span_from_ms is None or self.span_to_ms is None:
            return 0.0
        return (self.span_to_ms + interval_ms(self.interval) - self.span_from_ms) / DAY_MS

    def span_json(self) -> dict[str, Any]:
        """The scanned span: first and last expected bar (ms and UTC ISO) and how many were expected."""
        a, b = self.span_from_ms, self.span_to_ms
        return {
            "from_open_time": a,
            "to_open_time": b,
            "from_iso": None if a is None else iso_ms(a),
            "to_iso": None if b is None else iso_ms(b),
            "from_given": self.start_given,
            "to_given": self.end_given,
            "expected_bars": self.expected_bars,
        }

    def to_json(self) -> dict[str, Any]:
        """The original scanner's output shape (``scripts/jobs/continuity_scan.py --json``), plus
        ``missing_bars`` and the scanned ``span``."""
        days = self.scanned_days
        return {
            "symbol": self.symbol,
            "interval": self.interval,
            "scanned_days": int(days) if days == int(days) else round(days, 6),
            "gap_count": self.gap_count,
            "gaps": [m.to_json() for m in self.missing],
            "completeness_ratio": self.completeness_ratio,
            "expected_bars": self.expected_bars,
            "present_bars": self.present_bars,
            "missing_bars": self.missing_bars,
            "largest_gap_bars": self.largest_gap_bars,
            "span": self.span_json(),
        }


def _range(lo: int, hi: int, step: int) -> MissingRange:
    return MissingRange(lo, hi, (hi - lo) // step + 1)


def scan(
    client: Client,
    symbol: str,
    interval: str,
    *,
    days: float | None = 365,
    start_ms: int | None = None,
    end_ms: int | None = None,
    now_ms: int | None = None,
    max_ranges: int | None = None,
) -> ContinuityReport:
    """Continuity of ``symbol``/``interval`` over ``days`` ending now (None: the whole stored
    span), or over ``[start_ms, end_ms)`` (a bound not given: the stored edge).

    ``now_ms`` is the clock (default: the wall clock) that decides which bars have closed and where
    an implicit window ends. ``max_ranges`` caps the list of missing ranges (the counts stay exact).
    Raises ScanRangeError for a window that cannot be scanned (``scan_window``), ContinuityError
    when ClickHouse refuses the query.
    """
    step = interval_ms(interval)
    now = _now_ms() if now_ms is None else now_ms
    w = scan_window(interval, days=days, start_ms=start_ms, end_ms=end_ms, now_ms=now)
    lo, hi = w.lo, w.hi
    started = time.perf_counter()
    if hi < lo:
        row: Sequence[Any] = (0, 0, 0, 0, 0, 0, [])
    else:
        try:
            row = client.query(
                _SCAN_SQL,
                parameters={
                    "symbol": symbol,
                    "interval": interval,
                    "step": step,
                    "lo": lo,
                    "hi": hi,
                    "n": _NO_LIMIT if max_ranges is None else max_ranges,
                },
            ).result_rows[0]
        except Exception as exc:
            raise ContinuityError(
                f"continuity scan of {symbol}:{interval} on ohlcv_candles failed: {exc}"
            ) from exc
    present, first, last, gaps, missing, largest, holes = row
    present = int(present)
    interior = [_range(int(a), int(b), step) for a, b in holes]
    gap_count, missing_bars, largest_gap = int(gaps), int(missing), int(largest)
    first_t = int(first) if present else None
    last_t = int(last) if present else None
    # the span: a given edge is the window's bound, a stored edge the first/last stored bar
    span_from = lo if w.start_given else first_t
    span_to = hi if w.end_given else last_t
    if span_from is None or span_to is None or span_to < span_from:
        span_from = span_to = None
        expected = 0
    else:
        expected = (span_to - span_from) // step + 1
    leading: list[MissingRange] = []
    trailing: list[MissingRange] = []
    if span_from is not None and span_to is not None:
        if first_t is None or last_t is None:
            leading = [_range(span_from, span_to, step)]
        else:
            if first_t > span_from:
                leading = [_range(span_from, first_t - step, step)]
            if last_t < span_to:
                trailing = [_range(last_t + step, span_to, step)]
    edges = leading + trailing
    gap_count += len(edges)
    missing_bars += sum(m.missing_bars for m in edges)
    largest_gap = max([largest_gap, *(m.missing_bars for m in edges)])
    ranges = leading + interior + trailing
    if max_ranges is not None:
        ranges = ranges[:max_ranges]
    report = ContinuityReport(
        symbol=symbol,
        interval=interval,
        window_start_ms=w.start_ms,
        window_end_ms=w.end_ms,
        start_given=w.start_given,
        end_given=w.end_given,
        expected_bars=expected,
        present_bars=present,
        missing=tuple(ranges),
        gap_count=gap_count,
        missing_bars=missing_bars,
        largest_gap_bars=largest_gap,
        first_open_time=first_t,
        last_open_time=last_t,
        span_from_ms=span_from,
        span_to_ms=span_to,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )
    logger.debug(
        "continuity scan key=%s:%s from=%s to=%s expected=%d present=%d gaps=%d missing=%d ms=%.1f",
        symbol, interval, span_from, span_to, expected, present, gap_count, missing_bars,
        report.elapsed_ms,
    )  # fmt: skip
    return report


# --- queueing missing ranges as gap segments --------------------------------------------------


@dataclass(frozen=True, slots=True)
class MergedSegment:
    """Segments (and a scanned range) merged into one, with the missing bars recounted."""

    segment_id: int
    segment_end: int
    from_open_time: int
    to_open_time: int
    missing_bars: int
    #: ids of the segments it replaces (state ``merged`` now), not counting its own id
    replaced: tuple[int, ...]


@dataclass(frozen=True)
class QueueResult:
    opened: tuple[MissingRange, ...] = ()
    merged: tuple[MergedSegment, ...] = ()
    #: ranges some segment already answers for
    skipped: int = 0

    def segments(self) -> list[tuple[int, int, int, int]]:
        """(segment_id, from_open_time, to_open_time, missing_bars) of every segment written open."""
        return [(r.from_open_time, r.from_open_time, r.to_open_time, r.missing_bars) for r in self.opened] + [
            (m.segment_id, m.from_open_time, m.to_open_time, m.missing_bars) for m in self.merged
        ]


@dataclass
class _Known:
    """An existing segment, as queue_missing sees it."""

    segment_id: int
    segment_end: int
    from_open_time: int
    to_open_time: int
    state: str
    detected_at: int
    missing_bars: int
    mergeable: bool = field(default=False)


def _uncovered(lo: int, hi: int, covers: list[tuple[int, int]], step: int) -> list[tuple[int, int]]:
    """Parts of [lo, hi] (aligned open times) that none of ``covers`` (inclusive ranges) contains."""
    out = []
    cursor = lo
    for a, b in sorted(covers):
        if b < cursor:
            continue
        if a > hi:
            break
        if a > cursor:
            out.append((cursor, min(a - step, hi)))
        cursor = max(cursor, b + step)
        if cursor > hi:
            break
    if cursor <= hi:
        out.append((cursor, hi))
    return out


def queue_missing(client: Client, report: ContinuityReport, *, now_ms: int | None = None) -> QueueResult:
    """Open gap segments (state ``open``) for the report's missing ranges no segment covers yet.

    A segment covers the bars ``segment_id .. segment_end``; segments of any state count
    (an ``exchange_gap`` is not re-opened, a ``repaired`` one is not doubted). For each range:

    - no segment overlaps it: a new segment with ``segment_id = from_open_time`` = the first
      missing open time, ``segment_end = to_open_time`` = the last, the range's missing bars,
      ``detected_at``/``updated_at``/``version`` now;
    - segments cover all of it: nothing;
    - it overlaps segments but sticks out of them: when some overlapping segment is still plainly
      ``open`` (no repair under way), the range and those segments merge into one segment over
      their span. Its bars are recounted in ClickHouse (a scan of the span: what is stored there
      now), never added up from the old segments' estimates, which may be stale; the merged
      segment takes the span's first/last missing open time and the earliest ``detected_at``, and
      the segments it replaces get state ``merged``. Otherwise (only repairing, failed, repaired
      or exchange-gap segments overlap) the uncovered parts become new segments.

    Running it twice on the same report opens nothing the second time.
    """
    from streams.backfill import segment_lifecycle

    now = _now_ms() if now_ms is None else now_ms
    if not report.missing:
        return QueueResult()
    step = interval_ms(report.interval)
    known = [
        _Known(
            s.segment_id,
            s.segment_end,
            s.from_open_time,
            s.to_open_time,
            s.state,
            s.detected_at,
            s.missing_bars,
            mergeable=s.state == "open" and s.topology_state == "open",
        )
        for s in segment_lifecycle(client, report.symbol, report.interval)
        if s.state != "merged"
    ]
    rows: list[list[Any]] = []
    opened: list[MissingRange] = []
    merged: list[MergedSegment] = []
    skipped = 0

    def open_row(sid: int, end: int, frm: int, to: int, missing: int, detected: int, state: str) -> None:
        rows.append(
            [report.symbol, report.interval, sid, end, frm, to, missing, state, detected, None, now, now]
        )

    for rng in report.missing:
        lo, hi = rng.from_open_time, rng.to_open_time
        overlapping = [k for k in known if k.segment_id <= hi and k.segment_end >= lo]
        if not overlapping:
            open_row(lo, hi, lo, hi, rng.missing_bars, now, "open")
            opened.append(rng)
            known.append(_Known(lo, hi, lo, hi, "open", now, rng.missing_bars, mergeable=True))
            continue
        pieces = _uncovered(lo, hi, [(k.segment_id, k.segment_end) for k in overlapping], step)
        if not pieces:
            skipped += 1
            continue
        mergeable = [k for k in overlapping if k.mergeable]
        if not mergeable:
            for a, b in pieces:
                piece = _range(a, b, step)
                open_row(a, b, a, b, piece.missing_bars, now, "open")
                opened.append(piece)
                known.append(_Known(a, b, a, b, "open", now, piece.missing_bars, mergeable=True))
            continue
        span_lo = min([lo, *(k.from_open_time for k in mergeable)])
        span_hi = max([hi, *(k.to_open_time for k in mergeable)])
        recount = scan(
            client, report.symbol, report.interval, start_ms=span_lo, end_ms=span_hi + step,
            now_ms=max(now, span_hi + 2 * step),
        )  # fmt: skip
        if not recount.missing:  # filled meanwhile: nothing to merge into
            skipped += 1
            continue
        first, last = recount.missing[0].from_open_time, recount.missing[-1].to_open_time
        detected = min(k.detected_at for k in mergeable)
        replaced = tuple(k.segment_id for k in mergeable if k.segment_id != first)
        for k in mergeable:
            if k.segment_id != first:
                open_row(k.segment_id, k.segment_end, k.from_open_time, k.to_open_time, k.missing_bars,
                         k.detected_at, "merged")  # fmt: skip
                known.remove(k)
        missing = recount.expected_bars - recount.present_bars
        open_row(first, last, first, last, missing, detected, "open")
        merged.append(MergedSegment(first, last, first, last, missing, replaced))
        known[:] = [k for k in known if k.segment_id != first]
        known.append(_Known(first, last, first, last, "open", detected, missing, mergeable=True))
    if rows:
        try:
            client.insert("gap_segments", rows, column_names=_SEGMENT_COLUMNS)
        except Exception as exc:
            raise ContinuityError(
                f"writing {len(rows)} {report.symbol}:{report.interval} rows to gap_segments failed: {exc}"
            ) from exc
    logger.info(
        "continuity queue key=%s:%s opened=%d merged=%d skipped=%d",
        report.symbol, report.interval, len(opened), len(merged), skipped,
    )  # fmt: skip
    return QueueResult(opened=tuple(opened), merged=tuple(merged), skipped=skipped)


# --- the periodic scan and its gauges ---------------------------------------------------------


def update_gauges(report: ContinuityReport, window: str) -> None:
    """Set ``ohlcv_completeness_ratio`` and ``ohlcv_missing_bars`` for one window label."""
    ratio = report.completeness_ratio
    COMPLETENESS.labels(report.symbol, report.interval, window).set(float("nan") if ratio is None else ratio)
    MISSING_BARS.labels(report.symbol, report.interval, window).set(report.missing_bars)


SCAN_COLUMNS = ("symbol", "interval", "window", "scanned_at", "span_from", "span_to", "expected_bars",
                "present_bars", "missing_bars", "gap_count", "largest_gap_bars", "completeness",
                "elapsed_ms")  # fmt: skip


def store_scans(client: Client, labelled: Sequence[tuple[str, ContinuityReport]], now_ms: int) -> None:
    """One row per (window label, report) into ``continuity_scans``; a failed write is logged,
    never a failed scan (the gauges hold the same figures)."""
    rows = [[r.symbol, r.interval, label, now_ms, r.span_from_ms, r.span_to_ms, r.expected_bars,
             r.present_bars, r.missing_bars, r.gap_count, r.largest_gap_bars, r.completeness_ratio,
             r.elapsed_ms] for label, r in labelled]  # fmt: skip
    if not rows:
        return
    try:
        client.insert("continuity_scans", rows, column_names=list(SCAN_COLUMNS))
    except Exception as exc:
        logger.warning("continuity scan results not stored (continuity_scans): %s", exc)


def count_waiting_segments(client: Client, symbol: str, interval: str) -> int:
    """Segments of the stream whose effective state still waits for a repair."""
    from streams.backfill import segment_lifecycle

    return len(segment_lifecycle(client, symbol, interval, states=WAITING_STATES))


class ContinuityScheduler(threading.Thread):
    """Scans every stream over each window every ``every_s`` seconds and updates the gauges.

    A daemon thread; ``stop()`` (or setting ``stop_event``) ends it within one wait. The first
    scan runs at once. A window is whole days ending now (gauge label ``{days}d``) or ``"all"``,
    the whole stored span (label ``all``, the longest). With ``queue_missing`` the longest
    window's missing ranges are queued as gap segments for the orchestrator (``queue_missing()``),
    and ``on_queued(symbol, interval, result)`` announces what it wrote (the stack sends it to a
    running orchestrator). A failed scan is logged and retried at the next tick: the gauges keep
    their last values meanwhile. ``client`` is used by this thread only.
    """

    def __init__(
        self,
        client: Client,
        streams: Sequence[tuple[str, str]],
        *,
        every_s: float = 300.0,
        windows_days: Sequence[Window] = DEFAULT_WINDOWS_DAYS,
        queue_missing: bool = False,
        on_queued: Callable[[str, str, QueueResult], None] | None = None,
        stop_event: threading.Event | None = None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        super().__init__(name="continuity-scheduler", daemon=True)
        if every_s <= 0:
            raise ValueError(f"every_s must be positive, got {every_s}")
        self.client = client
        self.streams = list(streams)
        self.every_s = every_s
        for w in windows_days:
            if w != "all" and (not isinstance(w, int) or w < 1):
                raise ValueError(f"a window is a whole number of days >= 1 or 'all', got {w!r}")
        # shortest first, "all" last: the longest window's holes are the ones queued
        self.windows_days: tuple[Window, ...] = tuple(
            sorted(set(windows_days), key=lambda w: float("inf") if w == "all" else w)
        )
        self.queue = queue_missing
        self.on_queued = on_queued
        self.stop_event = stop_event or threading.Event()
        self.clock_ms = clock_ms
        self.cycles = 0
        self.last_reports: list[ContinuityReport] = []

    def scan_all(self) -> list[ContinuityReport]:
        """One cycle: every stream x window; returns the reports (longest window last per stream)
        and stores each in ``continuity_scans`` (the newest per stream and window)."""
        now = self.clock_ms()
        labelled: list[tuple[str, ContinuityReport]] = []  # (window label, report)
        for symbol, interval in self.streams:
            for window in self.windows_days:
                days = None if window == "all" else window
                report = scan(self.client, symbol, interval, days=days, now_ms=now)
                label = "all" if days is None else f"{days}d"
                update_gauges(report, label)
                labelled.append((label, report))
            if self.queue and labelled:
                queued = queue_missing(self.client, labelled[-1][1], now_ms=now)
                if self.on_queued is not None and queued.segments():
                    self.on_queued(symbol, interval, queued)
            OPEN_SEGMENTS.labels(symbol, interval).set(count_waiting_segments(self.client, symbol, interval))
        self.cycles += 1
        self.last_reports = [r for _, r in labelled]
        store_scans(self.client, labelled, now)
        return self.last_reports

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.scan_all()
            except (ContinuityError, ClickHouseUnavailableError) as exc:
                logger.warning("continuity scan cycle failed, retrying in %.0fs: %s", self.every_s, exc)
            if self.stop_event.wait(self.every_s):
                return

    def stop(self, timeout_s: float | None = 10.0) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout_s)
