"""The web console: a single page served by the API itself (``/``), its files under
``/console/`` (``api/console/``: ES modules with an import map, no build step; the one
dependency, TradingView's lightweight-charts, vendored under ``console/vendor/``)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"

# the vendored chart library is an .mjs module: a browser refuses a module served as text/plain
mimetypes.add_type("text/javascript", ".mjs")

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    """The console's page (it asks for the API key once and keeps it in the browser)."""
    return FileResponse(
        CONSOLE_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


def mount_console(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/console", StaticFiles(directory=CONSOLE_DIR), name="console")
