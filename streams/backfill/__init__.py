"""Gap repair from Binance REST: the orchestrator (``orchestrator``), its writes (``ledger``),
the segment lifecycle queries (``lifecycle``) and the Binance request gate (``gate``).

The names other rooms use are importable from here.
"""

from streams.backfill.gate import BackfillStoppedError, RestGate
from streams.backfill.lifecycle import (
    BackfillError,
    BackfillRun,
    SegmentLifecycle,
    backfill_runs,
    segment_lifecycle,
    segment_lifecycles,
)
from streams.backfill.orchestrator import BackfillConfig, Orchestrator, PollResult

__all__ = [
    "BackfillConfig",
    "BackfillError",
    "BackfillRun",
    "BackfillStoppedError",
    "Orchestrator",
    "PollResult",
    "RestGate",
    "SegmentLifecycle",
    "backfill_runs",
    "segment_lifecycle",
    "segment_lifecycles",
]
