"""Peak memory (RSS) of the demo process after the bundled sample is loaded.

Run: ``.venv/bin/python -m bench.demo_rss``. Starts ``ohlcv demo`` (embedded broker, chDB,
topology, orchestrator, API) in a fresh data directory on a free port, waits until the history
is bulk-loaded and the live replay has been appending for ``--settle-s`` seconds, then reads
``VmHWM`` (peak) and ``VmRSS`` of the demo process and of its broker child from /proc, and
stops the demo with Ctrl-C (SIGINT), as a user would. Baseline in the same run: the RSS of a
Python process that only imports what the demo imports.
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from ohlcv.infra.broker import free_port
from ohlcv.infra.process import stop_process

REPO = Path(__file__).resolve().parent.parent


def _vm_kib(status: str) -> dict[str, int]:
    """VmHWM (peak) and VmRSS, in KiB, from the text of a /proc/<pid>/status."""
    out: dict[str, int] = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0])
    return out


def _status_kib(pid: int) -> dict[str, int]:
    return _vm_kib(Path(f"/proc/{pid}/status").read_text())


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def baseline_kib() -> dict[str, int]:
    code = (
        "import ohlcv.cli, ohlcv.services, quixstreams, chdb, clickhouse_connect, fastapi, uvicorn;"
        "import pathlib;print(pathlib.Path('/proc/self/status').read_text())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return _vm_kib(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settle-s", type=float, default=20.0, help="live replay time before reading")
    ap.add_argument("--timeout-s", type=float, default=180.0)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data), "API_PORT": str(port), "METRICS_PORT": "0"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ohlcv.cli", "demo"], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, bufsize=1,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip())

    threading.Thread(target=read, daemon=True).start()
    loaded_at = None
    history = status = ""
    try:
        while time.monotonic() - started < args.timeout_s:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                if proc.poll() is not None:
                    raise SystemExit(f"demo exited with {proc.returncode} before the sample loaded") from None
                continue
            if line.startswith("history"):
                history = line
            if line.startswith("status") and "live appends 0 " not in line and history:
                status = line
                if loaded_at is None:
                    loaded_at = time.monotonic()
            if loaded_at is not None and time.monotonic() - loaded_at >= args.settle_s:
                break
        else:
            raise SystemExit(f"the demo did not load the sample within {args.timeout_s:.0f}s")
        demo = _status_kib(proc.pid)
        kids = [(pid, _name(pid), _status_kib(pid)) for pid in _children(proc.pid)]
        at = time.monotonic() - started
    finally:
        stop_process(proc, signal.SIGINT, 60)  # Ctrl-C, as a user stops it
    base = baseline_kib()
    print(f"# demo RSS benchmark {datetime.now(UTC):%Y-%m-%d %H:%M UTC}, {platform.machine()} "
          f"{os.cpu_count()} cpus, python {platform.python_version()}")  # fmt: skip
    print(f"# {history.split('  ', 1)[-1].strip() if history else ''}")
    print(f"# read {at:.0f}s after start, {args.settle_s:.0f}s into the live replay; last status: "
          f"{status.removeprefix('status').strip()}")  # fmt: skip
    mib = 1024
    print(f"demo process (API, topology, chDB, orchestrator)  peak {demo['VmHWM'] / mib:7.0f} MiB   "
          f"now {demo['VmRSS'] / mib:7.0f} MiB")  # fmt: skip
    for pid, name, kib in kids:
        print(f"child {name} (pid {pid}){'':<28} peak {kib['VmHWM'] / mib:7.0f} MiB   "
              f"now {kib['VmRSS'] / mib:7.0f} MiB")  # fmt: skip
    print(f"baseline: python with the demo's imports only      peak {base['VmHWM'] / mib:7.0f} MiB   "
          f"now {base['VmRSS'] / mib:7.0f} MiB")  # fmt: skip
    print(f"demo exit code after Ctrl-C: {proc.returncode}")


if __name__ == "__main__":
    main()
