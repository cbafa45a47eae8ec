"""The Binance request gate the orchestrator's workers share, one per market."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx

from streams.backfill.lifecycle import BackfillError


class BackfillStoppedError(BackfillError):
    """The orchestrator is stopping; raised inside a worker's wait to end the attempt early."""


class RestGate:
    """Shared by every worker of one market: bounded requests in flight, and shared pauses.

    ``pause`` is given to the market's BinanceRestClient as its ``sleep``: whatever a client waits
    for (a new weight window, Retry-After of a 429 or 418, back-off after a 5xx), every request of
    the market waits for it too. Waits end early with BackfillStoppedError when ``stop`` is set.
    """

    def __init__(self, stop: threading.Event, max_inflight: int = 1) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, got {max_inflight}")
        self._stop = stop
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._until = 0.0  # time.monotonic()
        self.pauses = 0
        self.paused_s = 0.0

    @property
    def remaining_s(self) -> float:
        with self._lock:
            return max(0.0, self._until - time.monotonic())

    def hold(self, seconds: float) -> None:
        """Send nothing on this market for ``seconds`` (from now); counts only what it extends."""
        if seconds <= 0:
            return
        with self._lock:
            now = time.monotonic()
            extension = now + seconds - max(self._until, now)
            if extension > 0:
                self._until = now + seconds
                if extension > 0.1:  # the client's own sleep right after the transport's hold
                    self.pauses += 1
                self.paused_s += extension

    def pause(self, seconds: float) -> None:
        self.hold(seconds)
        self.wait_open()

    def wait_open(self) -> None:
        while True:
            remaining = self.remaining_s
            if remaining <= 0:
                if self._stop.is_set():
                    raise BackfillStoppedError("orchestrator stopping")
                return
            if self._stop.wait(min(remaining, 0.25)):
                raise BackfillStoppedError("orchestrator stopping")

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one in-flight request slot, once no pause is in force."""
        self.wait_open()
        while not self._slots.acquire(timeout=0.25):
            if self._stop.is_set():
                raise BackfillStoppedError("orchestrator stopping")
        try:
            self.wait_open()  # a pause may have begun while this waited for the slot
            yield
        finally:
            self._slots.release()


def _retry_after_s(response: httpx.Response, default_s: float = 1.0) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", default_s)))
    except ValueError:
        return default_s


class GatedTransport(httpx.BaseTransport):
    """httpx transport that sends each request through a RestGate slot."""

    def __init__(self, gate: RestGate, inner: httpx.BaseTransport | None = None) -> None:
        self.gate = gate
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.gate.slot():
            response = self.inner.handle_request(request)
            if response.status_code in (429, 418):
                # close the gate before the slot is free: the client sleeps Retry-After only after
                # this returns, and a request another worker sent meanwhile would earn a (longer) ban
                self.gate.hold(_retry_after_s(response))
            return response

    def close(self) -> None:
        self.inner.close()
