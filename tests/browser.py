"""Headless Debian Chromium for browser tests (``make test`` installs it: ``make browser``).

A missing browser fails the test: it is a broken setup, never a skip."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")  # fmt: skip


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is not installed: run `make browser` (make test does)"
    return path


def render(
    url: str, screenshot: Path, *, width: int = 1280, height: int = 1600, budget_ms: int = 15_000
) -> str:
    """The page's visible text after its scripts ran, and a PNG screenshot of it."""
    with tempfile.TemporaryDirectory() as profile:
        common = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
        dom = subprocess.run(
            [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
        )
        subprocess.run([*common, f"--window-size={width},{height}", f"--screenshot={screenshot}", url],
                       capture_output=True, timeout=120, check=True)  # fmt: skip
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom.stdout, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    return re.sub(r"\s+", " ", text)


SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-output" / "screenshots"


def screenshot_dir() -> Path:
    """Where browser tests keep their screenshots (``test-output/screenshots``, not committed)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def playwright_chromium(pw: Any) -> Any:
    """Debian's Chromium driven by Playwright (its own browser download is unreachable here)."""
    return pw.chromium.launch(executable_path=chromium(), headless=True,
                              args=[f for f in FLAGS if f != "--headless"])  # fmt: skip
