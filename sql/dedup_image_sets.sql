-- Dedup step 5c: the set of images each document keeps after 5b, for
-- "documents with an identical non-empty set of images keep one" (OBELICS step 11).
WITH imgs AS (
  SELECT d.doc_id, i.pos, i.img AS url
  FROM {docs} d
  LATERAL VIEW posexplode(d.images) i AS pos, img
  WHERE i.img IS NOT NULL AND i.img <> ''
),
kept AS (
  SELECT m.doc_id, m.url
  FROM imgs m LEFT ANTI JOIN {dropped} x ON m.doc_id = x.doc_id AND m.pos = x.pos
)
SELECT k.doc_id, array_sort(collect_set(k.url)) AS image_set,
       FIRST(y.text_len) AS text_len, FIRST(y.warc_date) AS warc_date
FROM kept k JOIN {keys} y ON k.doc_id = y.doc_id
GROUP BY k.doc_id
