-- The canonical candle table: one row per (symbol, interval, open_time) under FINAL.
-- version = revision * 2 + is_closed: a closed candle beats every partial one, a repair
-- (revision n+1) beats revision n; equal versions (partial updates of one candle) keep the
-- last inserted row. Prices are Float64 (see schemas/klines.py for why).
CREATE TABLE IF NOT EXISTS ohlcv_candles
(
    symbol          LowCardinality(String),
    interval        LowCardinality(String),
    open_time       DateTime64(3, 'UTC'),
    close_time      DateTime64(3, 'UTC'),
    open            Float64,
    high            Float64,
    low             Float64,
    close           Float64,
    volume          Float64,
    quote_volume    Nullable(Float64),
    trades          Nullable(UInt64),
    taker_buy_base  Nullable(Float64),
    taker_buy_quote Nullable(Float64),
    is_closed       Bool,
    source          LowCardinality(String),
    bars            Nullable(UInt16),
    revision        UInt32,
    version         UInt64,
    event_time      DateTime64(3, 'UTC'),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(open_time)
ORDER BY (symbol, interval, open_time);
