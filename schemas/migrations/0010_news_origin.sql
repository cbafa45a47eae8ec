-- How a story or entry was found: a live poll, or a backfill reading a feed's older pages
-- (POST /api/news/backfill, /bootstrap). Source health counts only polls as a feed's live flow.
ALTER TABLE news_entries ADD COLUMN IF NOT EXISTS origin LowCardinality(String) DEFAULT 'poll';
ALTER TABLE news_articles ADD COLUMN IF NOT EXISTS origin LowCardinality(String) DEFAULT 'poll';
