-- The gap orchestrator's own record (streams/backfill.py). The candle topology owns the rows of
-- gap_segments (what is missing, open -> repaired); the orchestrator never writes there and keeps
-- its lifecycle of each segment here instead, keyed like gap_segments. The effective state of a
-- segment is: repaired when gap_segments says so, else gap_repairs.state when a row exists, else
-- gap_segments.state (see streams.backfill.segment_lifecycle).
-- state: open (waiting, e.g. for a second empty answer), repairing (candles produced, waiting for
-- the topology), repaired, exchange_gap (Binance REST has no candles there: final), failed.
CREATE TABLE IF NOT EXISTS gap_repairs
(
    symbol          LowCardinality(String),
    interval        LowCardinality(String),
    segment_id      UInt64,
    state           LowCardinality(String),
    attempts        UInt32,
    empty_answers   UInt32,
    rest_bars       UInt32,
    last_attempt_at Nullable(DateTime64(3, 'UTC')),
    next_attempt_at Nullable(DateTime64(3, 'UTC')),
    last_error      String,
    run_id          String,
    updated_at      DateTime64(3, 'UTC'),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (symbol, interval, segment_id);

-- One row per repair attempt of one segment (a run), updated in place through its states:
-- pending -> running -> success | partial | error. from/to is the range asked of Binance REST,
-- expected_bars its length in bars, loaded_bars the candles REST returned and we produced.
CREATE TABLE IF NOT EXISTS backfill_runs
(
    run_id          String,
    symbol          LowCardinality(String),
    interval        LowCardinality(String),
    segment_id      UInt64,
    from_open_time  DateTime64(3, 'UTC'),
    to_open_time    DateTime64(3, 'UTC'),
    expected_bars   UInt32,
    loaded_bars     UInt32,
    status          LowCardinality(String),
    attempts        UInt32,
    last_error      String,
    started_at      DateTime64(3, 'UTC'),
    finished_at     Nullable(DateTime64(3, 'UTC')),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY run_id;
