-- Dedup: point every duplicate at the document finally kept. A document removed
-- as a duplicate names the keeper of its step; a later step may remove that
-- keeper as a duplicate in turn (URL -> exact -> near -> identical image set),
-- so a chain has at most one link per step: three more hops reach its end.
-- Rejects without duplicate_of (no_text, no_image) are passed through.
SELECT r.row_id, r.reason, r.detail,
       COALESCE(r4.duplicate_of, r3.duplicate_of, r2.duplicate_of, r.duplicate_of) AS duplicate_of
FROM {rejects} r
LEFT JOIN {rejects} r2 ON r.duplicate_of = r2.row_id AND r2.duplicate_of IS NOT NULL
LEFT JOIN {rejects} r3 ON r2.duplicate_of = r3.row_id AND r3.duplicate_of IS NOT NULL
LEFT JOIN {rejects} r4 ON r3.duplicate_of = r4.row_id AND r4.duplicate_of IS NOT NULL
