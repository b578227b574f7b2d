-- title: Duplicate cluster sizes
-- kind: numeric
-- bins: integer
-- needs: rejects(duplicate_of)
-- Rows per duplicate cluster (the kept row plus every row rejected as its duplicate), per
-- stage and table, from every stage's rejects.
SELECT count(*) + 1 AS value, concat(stage, ' ', `table`) AS series
FROM {rejects}
WHERE duplicate_of IS NOT NULL
GROUP BY stage, `table`, duplicate_of
