"""The risk topology: score rows in (``ohlcv.scores``), one simulated book per stream
(``topologies.risk_logic``), its decisions, fills and marks out (``risk.events``, and the
``risk_*`` tables).

``build_risk`` is a pure builder: ``apply`` (stateful, per ``SYMBOL:interval``) advances the
stream's book by the row and returns ``{"events", "book"}`` (None for a row passed over: a
re-score, a replay, a bar behind the book); ``update`` produces each event onto
``risk.events``; the sink writes the tables.

Re-seed: on the first row of a stream in a process its book is read back from the newest
``risk_state`` row (the whole book as JSON, written before Quix commits the offsets), so after a
kill -9 the replayed rows the book already took are passed over: nothing is filled twice and
nothing is lost. The account (``risk_logic.Account``, for ``max_total_exposure``) is seeded on
the process's first row from every stream's newest stored book, and follows each book after.
It spans the books one process holds: an account's streams go to one risk process (one
partition of ``ohlcv.scores``, or one consumer of it). Metrics: ``risk_decisions_total{outcome}``,
``risk_fills_total{side}``, the books' gauges (``risk.metrics``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import Counter
from quixstreams import State
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import Topic
from quixstreams.sinks import BaseSink

from schemas.risk import RiskLimits
from topologies.risk_logic import Account, new_book, step

DECISIONS = Counter("risk_decisions_total", "Risk decisions on score rows", ["outcome"])
FILLS = Counter("risk_fills_total", "Simulated fills", ["side"])
PASSED = Counter("risk_scores_passed_total", "Score rows the books did not take (re-score, replay, behind)")

#: (symbol, interval) -> the stored book to continue from, or None
BookSeed = Callable[[str, str], dict[str, Any] | None]
#: () -> every stored book by ``SYMBOL:interval``
AccountSeed = Callable[[], dict[str, dict[str, Any]]]
#: open time -> (limits in force, their effective_from)
LimitsAt = Callable[[int], tuple[RiskLimits, int]]


def build_risk(
    sdf: StreamingDataFrame, *, limits: LimitsAt, seed: BookSeed, initial_equity: float,
    events_topic: Topic, sink: BaseSink | None, on_book: Callable[[str, dict[str, Any]], None] | None = None,
    seed_account: AccountSeed | None = None,
) -> StreamingDataFrame:  # fmt: skip
    token = uuid.uuid4().hex
    account = Account()

    def apply(score: dict[str, Any], state: State[Any, Any]) -> dict[str, Any] | None:
        key = f"{score['symbol']}:{score['interval']}"
        if not account.loaded:
            account.load(seed_account() if seed_account is not None else {})
        book: dict[str, Any] | None
        if state.get("seeded") != token:
            # read now, not taken from the account's seed: a partition this process gets later
            # (another risk process gone) holds books written after this process started
            book = seed(score["symbol"], score["interval"]) or new_book(initial_equity)
            state.set("seeded", token)
            state.set("book", book)
            account.put(key, book)
        else:
            book = state.get("book")
        if book is None:  # a state lost under the token: never, but not a new book silently
            raise RuntimeError(f"risk book of {key} missing from the state")
        lim, since = limits(int(score["open_time"]))
        out = step(book, score, lim, since, account.others(key))
        if out is None:
            PASSED.inc()
            return None
        events, book = out
        state.set("book", book)
        account.put(key, book)
        for e in events:
            if e["type"] == "decision":
                DECISIONS.labels(e["outcome"]).inc()
            elif e["type"] == "fill":
                FILLS.labels(e["side"]).inc()
        snapshot = dict(book)  # the book holds scalars only: a flat copy is the book as of this bar
        if on_book is not None:
            on_book(key, {**snapshot, "mark": events[-1]})
        return {"events": events, "book": snapshot}

    producer = sdf.processing_context.producer

    def publish(v: dict[str, Any] | None, key: Any, timestamp: int, headers: Any) -> None:
        if v is not None:
            for e in v["events"]:
                producer.produce(topic=events_topic.name, key=key, value=orjson.dumps(e), timestamp=timestamp)

    out = sdf.apply(apply, stateful=True).update(publish, metadata=True)
    if sink is not None:
        out.sink(sink)
    return out
