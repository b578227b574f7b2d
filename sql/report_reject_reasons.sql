-- title: Rejected rows per stage, table and reason
-- kind: table
-- needs: rejects(reason)
-- Counted from the rejects shards themselves (stats.json counts the same rows).
SELECT stage, `table`, reason, count(*) AS rows
FROM {rejects}
GROUP BY stage, `table`, reason
ORDER BY stage, `table`, rows DESC, reason
