"""A process that contends for a lock (tests/retrain/test_lock.py): ``python -m
tests.retrain.lock_worker BROKER TOPIC NAME OUT ROUNDS HOLD_S``; each round it tries the lock and,
when it wins, holds it HOLD_S seconds; it appends one JSON line per round to OUT."""

from __future__ import annotations

import json
import sys
import time

from retrain.lock import KafkaLock

broker, topic, name, out, rounds, hold = sys.argv[1:7]
lock = KafkaLock(broker, topic=topic)
for _ in range(int(rounds)):
    lease = lock.acquire(name, ttl_s=60)
    start = time.time()
    if lease.acquired:
        time.sleep(float(hold))
        end = time.time()
        lock.release(lease)
    else:
        end = start
    with open(out, "a") as f:
        f.write(
            json.dumps({"acquired": lease.acquired, "start": start, "end": end, "holder": lease.holder_owner})
            + "\n"
        )
    time.sleep(0.05)
lock.close()
