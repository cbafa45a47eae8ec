"""Tier c: the topology process dies (SIGKILL) or its memory-only broker restarts; nothing is lost.

The topology runs in a subprocess (``tests/topologies/crash_worker.py``) that owns a chDB data
path of its own; the test reads ClickHouse through the worker's ``query`` command (chDB allows
one OS process per data path, and this test process has the session's path open). Inputs are
real Binance Vision candles (NEARUSDT 2026-02) with one dropped range, so exactly one real gap
exists per interval; every assertion is about what ClickHouse holds under FINAL afterwards:

- every candle sent is stored once under FINAL, with its values; no (interval, open_time) twice;
- ``gap_segments`` holds exactly the dropped range (1m) and the 5m buckets it empties, and no
  ``gap_detected`` event names any other range (a crash invents no gap);
- each stream's events carry seq 1..N (``uniqExact(seq) == max(seq)``; a replayed event with
  the same seq is one row under the ReplacingMergeTree);
- the resampled 5m candles equal a batch aggregation of the stored 1m candles.

Costs: a restart after a SIGKILL waits ~11 s for the broker to drop the dead group member
(session timeout, then a failed sync), and every replayed candle ClickHouse already holds costs
one lookup, so checkpoints are kept small (``COMMIT_INTERVAL_S``).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from indicators.batch import features
from indicators.definitions import FEATURE_NAMES, ROW_FLAGS
from ohlcv.infra.broker import EmbeddedBroker
from schemas.klines import Candle
from tests.indicators.helpers import mismatches
from tests.topologies.helpers import vision_candles
from tests.topologies.pipeline import produce, unique_topics

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]
MIN = 60_000
SYMBOL = "NEARUSDT"
#: dropped bars (positions in the month): 12 bars, emptying the 5m bucket at position 3005
DROP = range(3002, 3014)
IDLE_S = 3.0
#: small checkpoints: a replay after a kill re-reads at most one of them, and replayed candles
#: the record already holds cost a ClickHouse lookup each
COMMIT_INTERVAL_S = 0.25


def month() -> Sequence[Candle]:
    return vision_candles(SYMBOL)


def t(i: int) -> int:
    """Open time of the ``i``-th bar of the month."""
    return month()[0].open_time + i * MIN


class Worker:
    """The topology subprocess: one chDB path, one state dir and one consumer group, reused by
    every run so a restart finds what the previous process left."""

    def __init__(self, tmp: Path, prefix: str):
        self.tmp = tmp
        self.prefix = prefix
        self.ch = tmp / "chdb"
        self.state = tmp / "state"
        self.group = f"crash-{prefix.strip('.')}"
        self.log = tmp / "worker.log"
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.written: dict[str, int] = {}

    def _spawn(self, *args: str) -> subprocess.Popen[str]:
        with self.log.open("ab") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "tests.topologies.crash_worker", *args],
                cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
            )  # fmt: skip

    def start(
        self, broker: str, *, die_after_inserts: int = 0, features: bool = False
    ) -> subprocess.Popen[str]:
        assert self.proc is None or self.proc.poll() is not None, "one worker at a time owns the chDB path"
        self.proc = self._spawn(
            "run", "--broker", broker, "--ch", str(self.ch), "--db", "ohlcv", "--group", self.group,
            "--state", str(self.state), "--prefix", self.prefix, "--idle-s", str(IDLE_S),
            "--resample", "5m", "--die-after-inserts", str(die_after_inserts),
            "--commit-interval-s", str(COMMIT_INTERVAL_S), *(["--features"] if features else []),
        )  # fmt: skip
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()
        return self.proc

    @staticmethod
    def _read(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put(None)

    def wait_written(self, done: Callable[[dict[str, int]], bool], timeout_s: float) -> dict[str, int]:
        """Block until a ``written`` progress line satisfies ``done``; returns its totals."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"worker exited before the condition; log: {self.log_tail()}")
            if line.startswith("written "):
                self.written = {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
                if done(self.written):
                    return self.written
        pytest.fail(f"no progress within {timeout_s:.0f}s (last {self.written}); log: {self.log_tail()}")

    def wait(self, timeout_s: float = 90) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"worker did not stop within {timeout_s:.0f}s; log: {self.log_tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def run_to_idle(self, broker: str, *, features: bool = False) -> None:
        self.start(broker, features=features)
        assert self.wait() == 0, self.log_tail()

    def query(self, *sql: str) -> list[list[tuple[Any, ...]]]:
        assert self.proc is None or self.proc.poll() is not None
        p = self._spawn("query", "--ch", str(self.ch), "--db", "ohlcv", *sql)
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0, self.log_tail()
        return [[tuple(r) for r in rows] for rows in orjson.loads(out.strip().splitlines()[-1])]

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@pytest.fixture
def worker(tmp_path: Path, topic_prefix: str) -> Any:
    w = Worker(tmp_path, topic_prefix)
    yield w
    w.kill()


# --- what ClickHouse must hold ------------------------------------------------------------
def gap_ranges(drop: range) -> dict[str, list[tuple[int, int]]]:
    """The gaps a dropped range leaves: 1m, and the 5m buckets with no bar left."""
    buckets = [b for b in range(drop.start, drop.stop) if b % 5 == 0 and b + 4 < drop.stop]
    return {"1m": [(t(drop.start), t(drop.stop - 1))], "5m": [(t(b), t(b)) for b in buckets]}


def assert_record(
    w: Worker, sent: Sequence[Candle], gaps: dict[str, list[tuple[int, int]]], state: str
) -> dict[str, tuple[int, int, int, int]]:
    """Everything the module docstring promises; returns (min, max, uniq, count) seq per interval."""
    (count, dups, stored, segments, seqs, gap_events, resampled) = w.query(
        "SELECT count() FROM ohlcv_candles FINAL WHERE interval = '1m'",
        "SELECT interval, open_time, count() AS n FROM ohlcv_candles FINAL GROUP BY interval, open_time "
        "HAVING n > 1",
        "SELECT toUnixTimestamp64Milli(open_time), open, high, low, close, volume FROM ohlcv_candles FINAL "
        "WHERE interval = '1m' ORDER BY open_time",
        "SELECT interval, segment_id, segment_end, toUnixTimestamp64Milli(from_open_time), "
        "toUnixTimestamp64Milli(to_open_time), missing_bars, state FROM gap_segments FINAL "
        "ORDER BY interval, segment_id",
        "SELECT interval, min(seq), max(seq), uniqExact(seq), count() FROM ohlcv_events FINAL "
        "GROUP BY interval ORDER BY interval",
        "SELECT DISTINCT interval, type, toUnixTimestamp64Milli(open_time), "
        "JSONExtractInt(payload, 'to_open_time') FROM ohlcv_events FINAL "
        "WHERE type IN ('gap_detected', 'gap_repaired') ORDER BY interval, type",
        RESAMPLED_VS_BATCH,
    )
    assert count == [(len(sent),)]
    assert dups == [], "an (interval, open_time) is stored twice under FINAL"
    want = sorted((c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in sent)
    assert stored == want, "stored 1m candles differ from what was sent"
    want_segments = [
        (iv, frm, to, state, 0 if state == "repaired" else (to - frm) // step + 1)
        for iv, step in (("1m", MIN), ("5m", 5 * MIN))
        for frm, to in gaps[iv]
    ]
    assert [(iv, sid, end, st, n) for iv, sid, end, _, _, n, st in segments] == want_segments, (
        f"gap segments are not exactly the dropped range: {segments}"
    )
    if state == "open":  # nothing of an open one arrived: all of its span is still missing
        assert all((frm, to) == (sid, end) for _, sid, end, frm, to, _, _ in segments)
    detected = sorted((iv, frm, to) for iv, typ, frm, to in gap_events if typ == "gap_detected")
    assert detected == sorted((iv, frm, to) for iv in gaps for frm, to in gaps[iv]), (
        "gap_detected != the drop"
    )
    repaired = sorted((iv, frm, to) for iv, typ, frm, to in gap_events if typ == "gap_repaired")
    assert repaired == (detected if state == "repaired" else [])
    by_interval = {iv: (lo, hi, uniq, n) for iv, lo, hi, uniq, n in seqs}
    for iv, (lo, hi, uniq, n) in by_interval.items():
        assert (lo, uniq, n) == (1, hi, hi), f"{iv}: seqs are not 1..N: {(lo, hi, uniq, n)}"
    buckets = len({c.open_time // (5 * MIN) for c in sent})
    assert resampled == [(buckets - 1, 0)], "5m candles differ from a batch aggregation of the 1m ones"
    return by_interval


RESAMPLED_VS_BATCH = """
    WITH m AS (SELECT * FROM ohlcv_candles FINAL WHERE interval = '1m'),
    agg AS (
      SELECT toStartOfInterval(open_time, INTERVAL 5 MINUTE) AS t, argMin(open, open_time) AS o,
             max(high) AS h, min(low) AS l, argMax(close, open_time) AS c, sum(volume) AS v, count() AS n
      FROM m GROUP BY t)
    SELECT count(), countIf(r.open != agg.o OR r.high != agg.h OR r.low != agg.l OR r.close != agg.c
           OR abs(r.volume - agg.v) > 1e-9 * agg.v OR r.bars != agg.n)
    FROM (SELECT * FROM ohlcv_candles FINAL WHERE interval = '5m') AS r
    FULL OUTER JOIN agg ON r.open_time = agg.t
    WHERE agg.t < (SELECT max(t) FROM agg)  -- the newest bucket is still open
"""


# --- the crashes ------------------------------------------------------------------------------
def test_sigkill_mid_batch_then_restart_loses_nothing_and_invents_no_gap(
    broker: str, topic_prefix: str, worker: Worker
) -> None:
    topics = unique_topics(broker, topic_prefix)
    sent = [c for i, c in enumerate(month()[:4500]) if i not in DROP]
    produce(broker, topics["raw"], sent)

    worker.start(broker)
    before = worker.wait_written(lambda w: w["candles"] >= 1500, timeout_s=90)
    # SIGKILL right after a sink write: the next checkpoint step commits the offsets and flushes
    # the state, so the kill most likely leaves ClickHouse ahead of both (a replay of one batch)
    worker.kill()
    assert before["candles"] < len(sent), "the worker finished before it could be killed"
    worker.run_to_idle(broker)
    assert_record(worker, sent, gap_ranges(DROP), "open")


@pytest.mark.parametrize("die_after_inserts", [1, 2])
def test_sigkill_between_the_tables_of_one_batch_write(
    broker: str, topic_prefix: str, worker: Worker, die_after_inserts: int
) -> None:
    """The kill lands inside the sink's write of the batch that detected the gap (tables in the
    sink's order: gap_segments, ohlcv_candles, ohlcv_events): after 1 or 2 of its tables are
    written, before the offsets are committed. After 2, the batch's candles are stored and its
    events are not: the re-seed finds them by ``event_seq`` and announces them again, with the
    seqs they had (migration 0004)."""
    topics = unique_topics(broker, topic_prefix)
    sent = [c for i, c in enumerate(month()[2000:4000], 2000) if i not in DROP]
    produce(broker, topics["raw"], sent)

    worker.start(broker, die_after_inserts=die_after_inserts)
    assert worker.wait() == -signal.SIGKILL, f"the worker did not die mid-write: {worker.log_tail()}"
    worker.run_to_idle(broker)
    assert_record(worker, sent, gap_ranges(DROP), "open")


def test_broker_restart_reseeds_from_clickhouse(tmp_path: Path, worker: Worker) -> None:
    """The memory-only broker restarts between two runs: the topics come back empty on a new
    port, the topology re-seeds from ClickHouse (last closed, seq, open segments) and goes on."""
    seam = 3002  # mid-bucket: the 5m bucket at 3000 is half built when the broker goes away
    drop = range(2002, 2014)
    first = [c for i, c in enumerate(month()[:seam]) if i not in drop]
    then = list(month()[seam : seam + 1000]) + [month()[i] for i in drop]

    with EmbeddedBroker(log_path=tmp_path / "broker1.log") as b1:
        topics = unique_topics(b1.address, worker.prefix)
        produce(b1.address, topics["raw"], first)
        worker.run_to_idle(b1.address)
        old_port = b1.port
    seq_before = assert_record(worker, first, gap_ranges(drop), "open")

    with EmbeddedBroker(log_path=tmp_path / "broker2.log") as b2:
        assert b2.port != old_port
        unique_topics(b2.address, worker.prefix)  # the new broker has no topic at all
        produce(b2.address, topics["raw"], then)
        worker.run_to_idle(b2.address)
    seq_after = assert_record(worker, first + then, gap_ranges(drop), "repaired")

    (seam_events,) = worker.query(
        "SELECT interval, seq, type, toUnixTimestamp64Milli(open_time) FROM ohlcv_events FINAL "
        f"WHERE (interval = '1m' AND seq = {seq_before['1m'][1] + 1}) "
        f"OR (interval = '5m' AND seq = {seq_before['5m'][1] + 1}) ORDER BY interval"
    )
    # seq continues from the stored max, with the candle after the seam (no gap_detected there)
    assert seam_events == [("1m", seq_before["1m"][1] + 1, "partial_close", t(seam)),
                           ("5m", seq_before["5m"][1] + 1, "partial_close", t(3000))]  # fmt: skip
    assert seq_after["1m"][1] > seq_before["1m"][1]


def test_sigkill_of_the_features_topology_then_restart_keeps_every_row_exact_and_once(
    broker: str, topic_prefix: str, worker: Worker
) -> None:
    """kill -9 while feature rows are being written; the restarted process re-seeds the features
    state from feature_snapshots: one row per stored candle, each still version 1 (nothing derived
    twice), and every value equal to the batch reference over the stored candles."""
    topics = unique_topics(broker, topic_prefix)
    sent = [c for i, c in enumerate(month()[:4500]) if i not in DROP]
    produce(broker, topics["raw"], sent)

    worker.start(broker, features=True)
    worker.wait_written(lambda w: w.get("features", 0) >= 1500, timeout_s=90)
    worker.kill()
    worker.run_to_idle(broker, features=True)

    cols = ["open_time", *FEATURE_NAMES, *ROW_FLAGS, "feature_version"]
    (candles, rows, dups) = worker.query(
        "SELECT toUnixTimestamp64Milli(open_time), open, high, low, close, volume FROM ohlcv_candles FINAL "
        "WHERE interval = '1m' AND is_closed ORDER BY open_time",
        f"SELECT toUnixTimestamp64Milli(open_time), {', '.join(cols[1:])} FROM feature_snapshots FINAL "
        "WHERE interval = '1m' ORDER BY open_time",
        "SELECT count() FROM (SELECT open_time FROM feature_snapshots FINAL GROUP BY interval, open_time "
        "HAVING count() > 1)",
    )
    assert len(candles) == len(sent) and dups == [(0,)]
    feature_rows = [dict(zip(cols, r, strict=True)) for r in rows]
    assert len(feature_rows) == len(sent)
    assert {r["feature_version"] for r in feature_rows} == {1}, "a row was derived twice"
    batch = features(pd.DataFrame(candles, columns=["open_time", "open", "high", "low", "close", "volume"])
                     .assign(repaired=False), MIN)  # fmt: skip
    bad = mismatches(feature_rows, batch)
    assert not bad, bad[:10]
