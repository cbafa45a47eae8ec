"""Stopping a child process: a signal, a grace period, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace_s: float = 30.0) -> bool:
    """Send ``sig`` and wait up to ``grace_s``; kill it after that. True when it had to be killed."""
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True
    return False
