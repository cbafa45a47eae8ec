"""Decoded per-stream state, kept for the length of one checkpoint.

Quix state serialises on every ``get`` and ``set`` (JSON through its transaction cache). In the
one-kline-per-record shape the candle step reads and writes the same few keys of a stream on
every record, so most of its state time was spent turning the same values into bytes and back.
``CheckpointStates`` hands the step a view per stream that decodes a key at most once per
checkpoint and writes each changed key once, when the checkpoint commits:

- ``view(key, state)``: the stream's view; reads go to the decoded values, missing keys are read
  from the Quix state once; writes mark the key dirty.
- ``flush()``: called by the sink at the start of its flush, which Quix runs before it prepares
  the state transactions (``Checkpoint.commit``: sinks, then state, then offsets): every dirty
  key is written into its stream's transaction, then the views are dropped. A checkpoint that
  fails after that (ClickHouse backpressure) discards those transactions with the written values,
  and the next checkpoint reads the committed state again.
- A view belongs to the transaction it was opened in: a record arriving in a new transaction
  (a checkpoint that committed without our flush, or a lost partition whose transaction Quix
  dropped) opens a fresh view, so values of a discarded transaction are never written.

Values handed to ``set`` are kept by reference, not copied: the caller must not change a value
after the last ``set`` of it in a checkpoint unless it sets it again (the candle machine and the
resampler set every value they change).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

_DELETED = object()


def _transaction_of(state: Any) -> Any:
    """The Quix transaction behind a ``TransactionState`` (the view's lifetime), or the state
    itself for plain key-value states (tests)."""
    return getattr(state, "_transaction", state)


class StreamView:
    """One stream's state for one checkpoint; see the module docstring."""

    __slots__ = ("dirty", "state", "transaction", "values")

    def __init__(self, state: Any):
        self.state = state
        self.transaction = _transaction_of(state)
        self.values: dict[str, Any] = {}
        self.dirty: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        try:
            v = self.values[key]
        except KeyError:
            v = self.values[key] = self.state.get(key)
        return default if v is None or v is _DELETED else v

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value
        self.dirty.add(key)

    def delete(self, key: str) -> None:
        self.values[key] = _DELETED
        self.dirty.add(key)

    def write(self) -> None:
        """Write the changed keys into the transaction the view was opened in."""
        state = self.state
        for key in self.dirty:
            v = self.values[key]
            if v is _DELETED:
                state.delete(key)
            else:
                state.set(key, v)
        self.dirty.clear()


class CheckpointStates:
    """The views of every stream touched since the last checkpoint."""

    def __init__(self) -> None:
        self._views: dict[str, StreamView] = {}

    def view(self, key: str, state: Any) -> StreamView:
        v = self._views.get(key)
        if v is None or v.transaction is not _transaction_of(state):
            v = self._views[key] = StreamView(state)
        return v

    def flush(self) -> None:
        """Write every changed key into its transaction and forget the views."""
        views, self._views = self._views, {}
        for v in views.values():
            v.write()
