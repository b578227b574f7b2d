-- Dedup step 3a: MinHash LSH candidate pairs from band collisions.
-- {keys}.bands holds one 64-bit hash per band (num_bands of them).
-- Documents sharing a (band, hash) bucket are candidates; each bucket emits a
-- star (smallest doc_id -> every other member), not all pairs, so a bucket of
-- n documents costs n - 1 edges. Connected components recover the rest.
WITH banded AS (
  SELECT doc_id, band, h
  FROM {keys}
  LATERAL VIEW posexplode(bands) b AS band, h
  WHERE bands IS NOT NULL
),
buckets AS (
  SELECT doc_id, MIN(doc_id) OVER (PARTITION BY band, h) AS root
  FROM banded
)
SELECT DISTINCT root AS src, doc_id AS dst
FROM buckets
WHERE doc_id <> root
