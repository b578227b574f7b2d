-- Dedup step 3a: MinHash LSH candidate pairs from band collisions.
-- {keys}.bands holds one 64-bit hash per band (num_bands of them).
-- Documents sharing a (band, hash) bucket are candidates. Each bucket's
-- members are ranked by doc_id and every member is paired with the bucket's
-- first {anchors} members: all pairs in a bucket of up to {anchors} + 1
-- documents, anchors x size edges in a bigger one (never quadratic).
-- {anchors} = 1 is a star (enough when candidates are not verified:
-- connected components recover the rest); with exact-Jaccard verification
-- more anchors keep a true pair from hiding behind a false candidate anchor.
WITH banded AS (
  SELECT doc_id, band, h
  FROM {keys}
  LATERAL VIEW posexplode(bands) b AS band, h
  WHERE bands IS NOT NULL
),
ranked AS (
  SELECT doc_id, band, h, ROW_NUMBER() OVER (PARTITION BY band, h ORDER BY doc_id) AS rn
  FROM banded
)
SELECT DISTINCT a.doc_id AS src, b.doc_id AS dst
FROM ranked a JOIN ranked b ON a.band = b.band AND a.h = b.h AND a.rn < b.rn
WHERE a.rn <= {anchors}
