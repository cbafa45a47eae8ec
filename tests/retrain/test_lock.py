"""``retrain.lock``: the replay rules, and two OS processes contending for one lock on the real
broker never hold it at the same time."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ohlcv.infra.kafka import ensure_topics
from retrain.lock import KafkaLock, holders
from schemas.topics import LOCKS, TopicSpec

ROOT = Path(__file__).resolve().parents[2]


def _claim(name: str, token: str, at: int, ttl: int = 100) -> dict[str, object]:
    return {"op": "claim", "name": name, "token": token, "owner": token, "at": at, "ttl_ms": ttl}


def test_first_claim_wins_until_released_or_lapsed() -> None:
    a, b, c = _claim("x", "a", 0), _claim("x", "b", 50), _claim("x", "c", 60)
    assert holders([a, b])["x"]["token"] == "a"  # b lost while a held it
    release = {"op": "release", "name": "x", "token": "a", "owner": "a", "at": 55, "ttl_ms": 1}
    assert holders([a, b, release]) == {}  # b lost at its own position: it never takes the lock later
    assert holders([a, b, release, c])["x"]["token"] == "c"
    assert holders([a, _claim("x", "late", 101)])["x"]["token"] == "late"  # a lapsed at 100
    assert holders([a, {**release, "token": "b"}])["x"]["token"] == "a"  # only the holder's token frees it
    assert holders([a, _claim("y", "y1", 1)]).keys() == {"x", "y"}


@pytest.mark.broker
def test_acquire_release_on_the_broker(broker: str) -> None:
    topic = f"t{uuid.uuid4().hex[:6]}.{LOCKS.name}"
    ensure_topics(broker, (TopicSpec(topic, LOCKS.key, {}, "", partitions=1),))
    one, two = KafkaLock(broker, topic=topic), KafkaLock(broker, topic=topic)
    first = one.acquire("retrain:XRPUSDT:1m", ttl_s=60)
    assert first.acquired
    other = two.acquire("retrain:XRPUSDT:1m", ttl_s=60)
    assert not other.acquired and other.holder_owner == one.owner
    assert two.acquire("retrain:BTCUSDT:1m", ttl_s=60).acquired  # another stream's lock is free
    one.release(first)
    assert two.acquire("retrain:XRPUSDT:1m", ttl_s=60).acquired
    lapsing = one.acquire("short", ttl_s=0.001)
    assert lapsing.acquired
    import time

    time.sleep(0.05)
    assert two.acquire("short", ttl_s=60).acquired  # the first claim lapsed without a release
    one.close()
    two.close()


@pytest.mark.broker
@pytest.mark.slow
def test_two_processes_never_hold_the_lock_together(broker: str, tmp_path: Path) -> None:
    topic = f"t{uuid.uuid4().hex[:6]}.{LOCKS.name}"
    ensure_topics(broker, (TopicSpec(topic, LOCKS.key, {}, "", partitions=1),))
    outs = [tmp_path / f"w{i}.jsonl" for i in range(2)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.retrain.lock_worker",
                broker,
                topic,
                "retrain:XRPUSDT:1m",
                str(out),
                "8",
                "0.3",
            ],
            cwd=ROOT,
        )
        for out in outs
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    rounds = [[json.loads(line) for line in out.read_text().splitlines()] for out in outs]
    held = sorted((r["start"], r["end"]) for rs in rounds for r in rs if r["acquired"])
    assert all(len(rs) == 8 for rs in rounds)
    assert len(held) >= 2, "the lock was taken"
    assert any(not r["acquired"] for rs in rounds for r in rs), "the two processes really contended"
    for (_, end), (start, _) in itertools.pairwise(held):
        assert start >= end, f"two holders at once: one until {end}, the next from {start}"
