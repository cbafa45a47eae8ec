"""``/metrics``: every metric of the process's default Prometheus registry (public)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}
    },
)
async def metrics() -> Response:
    """Prometheus exposition of this process (API, and any other room running in it)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
