-- The scheduled continuity scan's newest result per stream and window (ContinuityScheduler writes
-- one row per stream x window each cycle; FINAL keeps the newest): what the console shows as the
-- last scan, and what an analyst reads without scanning again.
CREATE TABLE IF NOT EXISTS continuity_scans
(
    symbol            LowCardinality(String),
    interval          LowCardinality(String),
    window            LowCardinality(String),
    scanned_at        DateTime64(3, 'UTC'),
    span_from         Nullable(DateTime64(3, 'UTC')),
    span_to           Nullable(DateTime64(3, 'UTC')),
    expected_bars     UInt64,
    present_bars      UInt64,
    missing_bars      UInt64,
    gap_count         UInt64,
    largest_gap_bars  UInt64,
    completeness      Nullable(Float64),
    elapsed_ms        Float64
)
ENGINE = ReplacingMergeTree(scanned_at)
ORDER BY (symbol, interval, window);
