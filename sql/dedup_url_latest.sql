-- Dedup step 1: one document per normalised page URL.
-- Keeps the most recent capture: latest warc_date, then latest warc_filename
-- (Common Crawl file names sort by crawl time), then the smallest doc_id.
-- Output: every document that has a URL, with the doc_id kept for its URL.
SELECT
  doc_id,
  url_norm,
  FIRST_VALUE(doc_id) OVER (
    PARTITION BY url_norm
    ORDER BY warc_date DESC NULLS LAST, warc_filename DESC NULLS LAST, doc_id ASC
  ) AS keep_id
FROM {keys}
WHERE url_norm IS NOT NULL
