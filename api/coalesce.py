"""Identical concurrent reads share one ClickHouse query, without serving anything stale.

A caller joins the *next* query for its key, never one already running: every answer comes from
a read that started after the caller asked, so coalescing never hides a write the caller could
have seen. At most one query per key runs and one waits, so a burst of N identical requests
(200 req/s on ``recent``, 500 WebSocket clients connecting at once) costs two queries, not N.
Embedded chDB runs one query at a time per process; without this, identical polls queue up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any

import anyio


class Coalescer:
    """``await coalescer.read(key, fn, *args)``: ``fn(*args)`` in a worker thread, shared per key."""

    def __init__(self) -> None:
        self._waiting: dict[Hashable, tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]] = {}
        self._running: set[Hashable] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.queries = 0
        self.reads = 0

    async def read(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> Any:
        self.reads += 1
        waiting = self._waiting.get(key)
        if waiting is None:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            fut.add_done_callback(_retrieve)  # an error nobody waits for any more is not "never retrieved"
            self._waiting[key] = (fut, fn, args)
            if key not in self._running:
                self._start(key)
        else:
            fut = waiting[0]
        # shield: one caller giving up (client gone) must not cancel the others' answer
        return await asyncio.shield(fut)

    def _start(self, key: Hashable) -> None:
        fut, fn, args = self._waiting.pop(key)
        self._running.add(key)
        task = asyncio.get_running_loop().create_task(self._run(key, fut, fn, args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, key: Hashable, fut: asyncio.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        self.queries += 1
        try:
            result = await anyio.to_thread.run_sync(fn, *args)
        except Exception as exc:
            if not fut.done():
                fut.set_exception(exc)
        else:
            if not fut.done():
                fut.set_result(result)
        finally:
            self._running.discard(key)
            if key in self._waiting:
                self._start(key)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
