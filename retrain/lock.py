"""A named lock held through Kafka, for one retrain per stream at a time across processes.

The ``ohlcv.locks`` topic has one partition, so the broker puts every claim and release in one
order that every reader sees. To claim ``name`` a process produces a ``claim`` (a fresh token,
its clock ``at``, a ``ttl_ms``), learns the claim's offset from the delivery report, and
replays the partition from its start up to that offset. Replaying, for each name in order:

- a ``claim`` takes the lock when nobody holds it, or when the holder's claim has lapsed
  (``claim.at > holder.at + holder.ttl_ms``: judged by the claims' own times, so every reader
  decides the same);
- a ``release`` frees it when its token is the holder's.

The claimant holds the lock iff its own claim took it. A losing claim stays in the log and
never takes the lock later (it is judged at its own position). ``release`` produces the
release. A crashed holder's lock lapses after its TTL, which must be shorter than the topic's
retention (1 day); a holder working longer than its TTL must not assume it still holds the
lock (``Lease.expires_at``). Works the same on the embedded broker and on Apache Kafka, and
needs no shared database (here each process has its own chDB).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from prometheus_client import Counter, Gauge

from ohlcv.errors import BrokerUnavailableError
from ohlcv.infra.kafka import ensure_topics
from schemas.topics import LOCKS

LOCK_ACQUIRE = Counter("auto_retrain_lock_acquire_total", "Attempts to take a retrain lock")
LOCK_ACQUIRED = Counter("auto_retrain_lock_acquired_total", "Retrain locks taken")
LOCK_HELD = Gauge("auto_retrain_lock_held", "Retrain locks this process holds")


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    token: str
    at: int
    ttl_ms: int
    holder_owner: str  #: who holds the lock (this process when acquired)
    acquired: bool

    @property
    def expires_at(self) -> int:
        return self.at + self.ttl_ms


def holders(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The holder of each lock after ``messages`` (in log order), by the rules above."""
    held: dict[str, dict[str, Any]] = {}
    for m in messages:
        cur = held.get(m["name"])
        if m["op"] == "claim":
            if cur is None or m["at"] > cur["at"] + cur["ttl_ms"]:
                held[m["name"]] = m
        elif m["op"] == "release" and cur is not None and cur["token"] == m["token"]:
            del held[m["name"]]
    return held


class KafkaLock:
    def __init__(
        self,
        broker_address: str,
        *,
        topic: str = LOCKS.name,
        timeout_s: float = 10.0,
        consumer_extra: dict[str, Any] | None = None,
    ):
        self.address = broker_address
        self.topic = topic
        self.timeout_s = timeout_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.consumer_extra = consumer_extra or {}
        self._producer = Producer({"bootstrap.servers": broker_address, "linger.ms": 0, "acks": "all"})
        if topic == LOCKS.name:
            ensure_topics(broker_address, (LOCKS,))

    def _produce(self, msg: dict[str, Any]) -> int:
        offsets: list[int] = []
        errors: list[Any] = []

        def delivered(err: Any, m: Any) -> None:
            (errors.append(err) if err is not None else offsets.append(m.offset()))

        self._producer.produce(self.topic, key=msg["name"], value=orjson.dumps(msg), on_delivery=delivered)
        if self._producer.flush(self.timeout_s) or errors or not offsets:
            raise BrokerUnavailableError(f"lock message on {self.topic} not delivered: {errors or 'timeout'}")
        return offsets[0]

    def _replay(self, upto: int) -> list[dict[str, Any]]:
        c = Consumer(
            {
                "bootstrap.servers": self.address,
                "group.id": f"lock-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                **self.consumer_extra,
            }
        )
        out: list[dict[str, Any]] = []
        try:
            c.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                m = c.poll(0.2)
                if m is None:
                    continue
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise BrokerUnavailableError(f"reading {self.topic}: {m.error()}")
                with contextlib.suppress(orjson.JSONDecodeError):  # not ours: never decides a lock
                    out.append(orjson.loads(m.value() or b""))
                if m.offset() >= upto:
                    return out
        finally:
            c.close()
        raise BrokerUnavailableError(f"{self.topic} not read up to offset {upto} in {self.timeout_s}s")

    def acquire(self, name: str, ttl_s: float) -> Lease:
        LOCK_ACQUIRE.inc()
        claim: dict[str, Any] = {
            "op": "claim",
            "name": name,
            "token": uuid.uuid4().hex,
            "owner": self.owner,
            "at": int(time.time() * 1000),
            "ttl_ms": max(1, int(ttl_s * 1000)),
        }
        offset = self._produce(claim)
        holder = holders(self._replay(offset)).get(name)
        won = holder is not None and holder["token"] == claim["token"]
        if won:
            LOCK_ACQUIRED.inc()
            LOCK_HELD.inc()
        return Lease(
            name, claim["token"], claim["at"], claim["ttl_ms"], holder["owner"] if holder else "", won
        )

    def release(self, lease: Lease) -> None:
        if not lease.acquired:
            return
        self._produce(
            {
                "op": "release",
                "name": lease.name,
                "token": lease.token,
                "owner": self.owner,
                "at": int(time.time() * 1000),
                "ttl_ms": 1,
            }
        )
        LOCK_HELD.dec()

    def close(self) -> None:
        self._producer.flush(self.timeout_s)
