-- event_seq: the seq of the ohlcv_events row that announces a candle row or a gap_segments row
-- (0 for rows no event announces: bulk imports, continuity scans, rows from before 0004).
-- The candle sink writes a batch's tables in the order gap_segments, ohlcv_candles, ohlcv_events,
-- so ohlcv_events is the batch's commit mark: a row whose event_seq is above its stream's
-- max(ohlcv_events.seq) was written by a batch cut short before its events (a crash between two
-- inserts). The topology's re-seed treats such rows as not yet announced and announces them again
-- with the same seqs (topologies.seed).
ALTER TABLE ohlcv_candles ADD COLUMN IF NOT EXISTS event_seq UInt64 DEFAULT 0;
ALTER TABLE gap_segments ADD COLUMN IF NOT EXISTS event_seq UInt64 DEFAULT 0;
