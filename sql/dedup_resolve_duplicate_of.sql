-- Dedup: follow duplicate_of one hop. A document removed as a duplicate of a
-- document that a later step removed as a duplicate in turn points to that
-- one's representative. The job applies this until nothing changes.
SELECT r.row_id, r.reason, r.detail,
       COALESCE(n.duplicate_of, r.duplicate_of) AS duplicate_of
FROM {rejects} r
LEFT JOIN {rejects} n ON r.duplicate_of = n.row_id AND n.duplicate_of IS NOT NULL
