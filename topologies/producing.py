"""Producing many records per input record through the Application's own producer.

Quix Streams' ``InternalProducer.produce`` checks for a latched delivery error, builds its
keyword arguments, wraps the delivery callback and polls librdkafka once per message: ~8 us a
record here, more than the features topology spends deriving a row. ``FastProducer.produce``
does the same work once per call for a list of values: it raises a latched delivery error
first, hands every value to the same underlying confluent-kafka producer with the same
delivery callback (so Quix still tracks each partition's produced offset and latches an error,
flushes at each checkpoint and, in exactly-once mode, sends the records in its transaction),
retries on a full local queue as Quix does, and polls once at the end.

It reaches three private names of Quix Streams (``_raise_for_error``, ``_on_delivery`` and the
inner producer); when the installed version lacks them it falls back to the public
``produce`` (``tests/topologies/test_producing.py`` fails if that happens with the pinned
version, so an upgrade that renames them is noticed, not slowed down silently).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: as Quix: poll this long for the local queue to drain, then retry, at most this many times
POLL_ON_FULL_S = 1.0
TRIES_ON_FULL = 3


class FastProducer:
    def __init__(self, producer: Any):
        self.quix = producer
        outer = getattr(producer, "_producer", None)
        self.fast = all((
            callable(getattr(producer, "_raise_for_error", None)),
            callable(getattr(producer, "_on_delivery", None)),
            outer is not None and hasattr(type(outer), "_producer"),
        ))  # fmt: skip

    def produce(self, topic: str, values: Iterable[bytes], key: Any, timestamp: int | None) -> None:
        """Produce each of ``values`` with ``key`` and ``timestamp`` onto ``topic``."""
        if not self.fast:
            for v in values:
                self.quix.produce(topic=topic, value=v, key=key, timestamp=timestamp)
            return
        q = self.quix
        q._raise_for_error()
        raw = q._producer._producer
        done = q._on_delivery
        kw: dict[str, Any] = {"on_delivery": done}
        if timestamp is not None:
            kw["timestamp"] = timestamp
        for v in values:
            tried = 0
            while True:
                tried += 1
                try:
                    raw.produce(topic, v, key, **kw)
                    break
                except BufferError:
                    if tried >= TRIES_ON_FULL:
                        raise
                    raw.poll(POLL_ON_FULL_S)
        raw.poll(0)
