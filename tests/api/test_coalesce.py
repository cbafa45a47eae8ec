"""Tier a: identical concurrent reads share a query, and no answer predates its request."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from api.coalesce import Coalescer


class Store:
    """A read that takes ``delay_s`` and returns the version current when it STARTED."""

    def __init__(self, delay_s: float = 0.05):
        self.version = 0
        self.delay_s = delay_s
        self.calls = 0
        self.lock = threading.Lock()

    def read(self, tag: str) -> tuple[str, int]:
        with self.lock:
            self.calls += 1
            seen = self.version
        time.sleep(self.delay_s)
        if tag == "boom":
            raise RuntimeError("store down")
        return tag, seen


async def test_a_burst_of_identical_reads_costs_at_most_two_queries() -> None:
    store, reads = Store(), Coalescer()
    results = await asyncio.gather(*(reads.read("k", store.read, "a") for _ in range(100)))
    # the first caller's query starts at once; the 99 that came after it share the next one
    assert store.calls == 2 and all(r == ("a", 0) for r in results)
    assert (reads.reads, reads.queries) == (100, 2)


async def test_an_answer_never_comes_from_a_read_that_started_before_the_request() -> None:
    store, reads = Store(), Coalescer()
    early = asyncio.create_task(reads.read("k", store.read, "a"))
    while store.calls == 0:  # the first query has started (a fixed sleep flaked on a loaded machine)
        await asyncio.sleep(0.001)
    store.version = 1  # a write lands while the first query runs
    late = await reads.read("k", store.read, "a")
    assert (await early, late) == (("a", 0), ("a", 1))


async def test_keys_do_not_share_and_errors_reach_every_waiter() -> None:
    store, reads = Store(), Coalescer()
    a, b = await asyncio.gather(reads.read("x", store.read, "a"), reads.read("y", store.read, "b"))
    assert (a[0], b[0], store.calls) == ("a", "b", 2)
    outcomes = await asyncio.gather(
        *(reads.read("z", store.read, "boom") for _ in range(3)), return_exceptions=True
    )
    assert [str(o) for o in outcomes] == ["store down"] * 3


async def test_a_caller_giving_up_does_not_cancel_the_others() -> None:
    store, reads = Store(delay_s=0.1), Coalescer()
    quitter = asyncio.create_task(reads.read("k", store.read, "a"))
    stayer = asyncio.create_task(reads.read("k", store.read, "a"))
    await asyncio.sleep(0.02)
    quitter.cancel()
    assert await stayer == ("a", 0)
    with pytest.raises(asyncio.CancelledError):
        await quitter
