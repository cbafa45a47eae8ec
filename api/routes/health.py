"""Public liveness and version routes (no API key)."""

from __future__ import annotations

from fastapi import APIRouter

import ohlcv

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@router.get("/api/version")
def version() -> dict[str, str]:
    return {"version": ohlcv.__version__}
