-- News in the feature rows (topologies/news_features.py): the mean sentiment and count of the
-- stories tagged with the symbol in the window before the bar's close, and whether the news
-- input was stalled then. Rows written before this migration read as "no news, stalled".
ALTER TABLE feature_snapshots ADD COLUMN IF NOT EXISTS news_sentiment Nullable(Float64) AFTER range_pct;
ALTER TABLE feature_snapshots ADD COLUMN IF NOT EXISTS news_count UInt32 DEFAULT 0 AFTER news_sentiment;
ALTER TABLE feature_snapshots ADD COLUMN IF NOT EXISTS news_stalled Bool DEFAULT true AFTER news_count;
