-- Dedup: the per-document keys every step uses.
-- {features}: doc_id, url_norm, domain, text_len, text_hash, bands, general_metadata
--   (computed in Python by pipelines/spark_dedup.py: URL normalisation, text hash, MinHash bands).
SELECT
  doc_id,
  url_norm,
  domain,
  text_len,
  text_hash,
  bands,
  try_cast(get_json_object(general_metadata, '$.warc_date') AS TIMESTAMP) AS warc_date,
  get_json_object(general_metadata, '$.warc_filename') AS warc_filename
FROM {features}
