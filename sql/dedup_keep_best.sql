-- Dedup: keep one document per group ({group}), used by exact text dedup
-- (group = text_hash), near-dup components (group = component root) and
-- identical image sets (group = image_set).
-- The kept document has the longest text, then the most recent warc_date,
-- then the smallest doc_id. Output: each grouped document and its group's keeper.
SELECT
  doc_id,
  {group} AS grp,
  FIRST_VALUE(doc_id) OVER (
    PARTITION BY {group}
    ORDER BY text_len DESC, warc_date DESC NULLS LAST, doc_id ASC
  ) AS keep_id
FROM {table}
WHERE {group} IS NOT NULL
