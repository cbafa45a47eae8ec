"""kill -9 of the risk topology between two tables of one checkpoint (fills written, the book
not): the restarted process continues from the stored book, fills nothing twice and loses
nothing; the result equals the batch backtest to the cent. The topology runs in a subprocess
(``tests/risk/risk_worker.py``) that owns its chDB path."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from ohlcv.infra.kafka import ensure_topics
from schemas.topics import RISK_EVENTS, SCORES, TopicSpec
from tests.risk.data import outage_span, rule_scores

pytestmark = [pytest.mark.broker, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _worker(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tests.risk.risk_worker", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


def test_kill_9_between_fills_and_book_fills_nothing_twice(broker: str, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}."
    scores_t, events_t = prefix + SCORES.name, prefix + RISK_EVENTS.name
    ensure_topics(broker, tuple(TopicSpec(n, "", {}, "", partitions=1) for n in (scores_t, events_t)))
    p = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    for s in rule_scores(outage_span()):
        p.produce(scores_t, key=b"XRPUSDT:1m", value=orjson.dumps(s))
    p.flush(30)
    common = ("--broker", broker, "--ch", str(tmp_path / "ch"), "--group", "risk-crash",
              "--state", str(tmp_path / "state"), "--scores", scores_t, "--events", events_t)  # fmt: skip
    first = _worker("run", *common, "--die-on-write", "3")
    assert first.returncode == -9 and "dying after risk_fills" in first.stdout, (
        first.stdout[-500:],
        first.stderr[-2000:],
    )
    second = _worker("run", *common)
    assert second.returncode == 0 and "idle, stopped" in second.stdout, second.stderr[-2000:]
    done = _worker("check", "--ch", str(tmp_path / "ch"))
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout)
    # the killed checkpoint's fills were written before the kill, then again by the restarted
    # process (its book was not stored, so it took those bars again): same keys, same values,
    # folded; FINAL holds each fill once, written after the kill
    killed = json.loads(first.stdout.split("dying after risk_fills ", 1)[1].splitlines()[0])
    at = {f[0]: f[6] for f in r["fills"]}
    assert killed["opens"] and all(at[t] > killed["at"] for t in killed["opens"])
    assert len(r["fills"]) == len(r["ref_fills"]) > 20
    for got, exp in zip(r["fills"], r["ref_fills"], strict=True):
        assert got[:2] == exp[:2] and abs(got[4] - exp[4]) < 0.005 and abs(got[5] - exp[5]) < 0.005
        assert got[2] == pytest.approx(exp[2], rel=1e-12) and got[3] == pytest.approx(exp[3], rel=1e-12)
    assert [t for t, _ in r["curve"]] == [t for t, _ in r["ref_curve"]]  # no bar lost
    assert all(abs(a[1] - b[1]) < 0.005 for a, b in zip(r["curve"], r["ref_curve"], strict=True))
    assert r["decisions"] == r["ref_decisions"]
