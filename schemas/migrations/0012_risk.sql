-- The risk engine (topologies/risk.py): one simulated book per stream, advanced by its scores.
-- Every key is the bar (symbol, interval, open_time): a replayed score writes the same rows again.
CREATE TABLE IF NOT EXISTS risk_decisions
(
    symbol       LowCardinality(String),
    interval     LowCardinality(String),
    open_time    DateTime64(3, 'UTC'),
    outcome      LowCardinality(String),
    reason       LowCardinality(String),
    probability  Float64,
    model_id     String,
    position_qty Float64,
    limits_from  DateTime64(3, 'UTC'),
    at           DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(at)
PARTITION BY toYYYYMM(open_time)
ORDER BY (symbol, interval, open_time);

CREATE TABLE IF NOT EXISTS risk_fills
(
    symbol       LowCardinality(String),
    interval     LowCardinality(String),
    open_time    DateTime64(3, 'UTC'),
    decided_at   DateTime64(3, 'UTC'),
    side         LowCardinality(String),
    reason       LowCardinality(String),
    qty          Float64,
    price        Float64,
    fee          Float64,
    cash_after   Float64,
    realized_pnl Float64,
    at           DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(at)
ORDER BY (symbol, interval, open_time);

-- The position after each fill; FINAL: the current one per stream.
CREATE TABLE IF NOT EXISTS risk_positions
(
    symbol      LowCardinality(String),
    interval    LowCardinality(String),
    open_time   DateTime64(3, 'UTC'),
    qty         Float64,
    entry_price Nullable(Float64),
    cost        Float64,
    at          DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(open_time)
ORDER BY (symbol, interval);

-- The book after each bar (the equity curve); `book` is the engine's whole state as JSON, from
-- which a restarted engine continues.
CREATE TABLE IF NOT EXISTS risk_state
(
    symbol          LowCardinality(String),
    interval        LowCardinality(String),
    open_time       DateTime64(3, 'UTC'),
    close           Float64,
    cash            Float64,
    position_qty    Float64,
    entry_price     Nullable(Float64),
    exposure        Float64,
    equity          Float64,
    peak_equity     Float64,
    drawdown        Float64,
    utilization     Float64,
    day_start_equity Float64,
    cooldown_left   UInt32,
    pending         LowCardinality(String),
    book            String,
    at              DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(at)
PARTITION BY toYYYYMM(open_time)
ORDER BY (symbol, interval, open_time);

-- Limit changes (PUT /api/risk/limits): in force from the bars opening at effective_from.
CREATE TABLE IF NOT EXISTS risk_limits
(
    effective_from DateTime64(3, 'UTC'),
    limits         String,
    at             DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(at)
ORDER BY effective_from;
