"""`ohlcv up` ingesting the fake Binance (websocket and REST playing the bundled real data), as a
subprocess: started with the tests' env, stopped with Ctrl-C (SIGINT) as a user would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakes.binance import Datasets, FakeBinance, FakeBinanceUrls, Playback
from ohlcv.infra.broker import free_port
from ohlcv.infra.process import stop_process

REPO = Path(__file__).resolve().parents[2]
OHLCV = Path(sys.executable).parent / "ohlcv"


@dataclass
class LiveStack:
    proc: subprocess.Popen[str]
    fake: FakeBinance
    urls: FakeBinanceUrls
    api: str
    #: what the stack printed, once it stopped
    output: str = ""


@contextlib.contextmanager
def live_up(tmp_path: Path, broker: str, *, speed: float, **env: Any) -> Iterator[LiveStack]:
    """XRPUSDT 1m (+5m resampled) from the fake market at ``speed``; ``env`` adds or overrides."""
    fake = FakeBinance(
        Datasets.from_data_dir(REPO / "data"), playback=Playback(speed=speed, updates_per_candle=2)
    )
    urls = fake.start()
    port = free_port()
    full_env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "d"),
        "KAFKA_BROKER_ADDRESS": broker,
        "INGESTION_ENABLED": "true",
        "BINANCE_SPOT_WS_URL": urls.spot_ws,
        "BINANCE_SPOT_REST_URL": urls.spot_rest,
        "SYMBOLS": "XRPUSDT",
        "INTERVALS": "1m",
        "RESAMPLE_INTERVALS": "5m",
        "API_PORT": str(port),
        **{k: str(v) for k, v in env.items()},
    }
    proc = subprocess.Popen([str(OHLCV), "up"], env=full_env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    stack = LiveStack(proc, fake, urls, f"http://127.0.0.1:{port}")
    try:
        yield stack
    finally:
        try:
            stop_process(proc, signal.SIGINT, 30)
            stack.output = proc.stdout.read() if proc.stdout else ""
        finally:
            fake.stop()
