-- Dedup step 5a: image URLs used by more than {max_docs} documents
-- (OBELICS: images appearing in more than 10 documents are dropped everywhere).
WITH imgs AS (
  SELECT d.doc_id, i.img
  FROM {docs} d
  LATERAL VIEW posexplode(d.images) i AS pos, img
  WHERE i.img IS NOT NULL AND i.img <> ''
)
SELECT img AS url, COUNT(DISTINCT doc_id) AS n_docs
FROM imgs
GROUP BY img
HAVING COUNT(DISTINCT doc_id) > {max_docs}
