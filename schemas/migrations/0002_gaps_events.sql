-- Gap segments: one row per segment under FINAL. A segment answers for the bars
-- segment_id .. segment_end (open times in ms, fixed when the segment is created by detection,
-- a split, or a scan); from_open_time .. to_open_time is what is still missing and shrinks as
-- late candles fill it. state: open, repairing, repaired, exchange_gap, failed.
CREATE TABLE IF NOT EXISTS gap_segments
(
    symbol          LowCardinality(String),
    interval        LowCardinality(String),
    segment_id      UInt64,
    segment_end     UInt64,
    from_open_time  DateTime64(3, 'UTC'),
    to_open_time    DateTime64(3, 'UTC'),
    missing_bars    UInt32,
    state           LowCardinality(String),
    detected_at     DateTime64(3, 'UTC'),
    repaired_at     Nullable(DateTime64(3, 'UTC')),
    attempts        UInt32 DEFAULT 0,
    last_attempt_at Nullable(DateTime64(3, 'UTC')),
    last_error      String DEFAULT '',
    updated_at      DateTime64(3, 'UTC'),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (symbol, interval, segment_id);

-- Every candle event with its per-stream sequence: WebSocket resume reads here, and the
-- topology re-seeds its sequence from max(seq) on start. Partial updates expire after 2 days.
CREATE TABLE IF NOT EXISTS ohlcv_events
(
    symbol      LowCardinality(String),
    interval    LowCardinality(String),
    seq         UInt64,
    type        LowCardinality(String),
    open_time   Nullable(DateTime64(3, 'UTC')),
    emitted_at  DateTime64(3, 'UTC'),
    payload     String
)
ENGINE = ReplacingMergeTree
ORDER BY (symbol, interval, seq)
TTL toDateTime(emitted_at) + INTERVAL 2 DAY DELETE WHERE type = 'partial_update';
