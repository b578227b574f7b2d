-- Dedup step 5b: image positions to remove from documents:
-- every position of a too-common image URL ({common}), and every repeat of an
-- image URL inside one document after its first position.
WITH imgs AS (
  SELECT d.doc_id, i.pos, i.img,
         ROW_NUMBER() OVER (PARTITION BY d.doc_id, i.img ORDER BY i.pos) AS rn
  FROM {docs} d
  LATERAL VIEW posexplode(d.images) i AS pos, img
  WHERE i.img IS NOT NULL AND i.img <> ''
)
SELECT m.doc_id, m.pos,
       CASE WHEN c.url IS NOT NULL THEN 'image_too_common' ELSE 'image_repeated_in_doc' END AS reason
FROM imgs m LEFT JOIN {common} c ON m.img = c.url
WHERE c.url IS NOT NULL OR m.rn > 1
