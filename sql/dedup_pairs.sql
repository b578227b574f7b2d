-- Dedup: which image-text pairs survive. A pair is rejected when its document
-- was removed (doc_removed, detail = the document's reason), when no input
-- document has its doc_id (doc_missing), or when its image was dropped from
-- the document as too common (image_too_common). Other pairs are kept.
SELECT
  p.*,
  CASE
    WHEN r.row_id IS NOT NULL THEN 'doc_removed'
    WHEN k.doc_id IS NULL THEN 'doc_missing'
    WHEN c.url IS NOT NULL THEN 'image_too_common'
  END AS reject_reason,
  CASE
    WHEN r.row_id IS NOT NULL THEN concat('document ', p.doc_id, ' removed: ', r.reason,
                                           COALESCE(concat(' (kept ', r.duplicate_of, ')'), ''))
    WHEN c.url IS NOT NULL THEN concat('image in ', CAST(c.n_docs AS STRING), ' documents')
  END AS reject_detail
FROM {pairs} p
LEFT JOIN {doc_rejects} r ON p.doc_id = r.row_id
LEFT JOIN {kept_docs} k ON p.doc_id = k.doc_id
LEFT JOIN {common} c ON p.url = c.url
