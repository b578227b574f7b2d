-- title: Text length of documents (characters)
-- kind: numeric
-- scale: log
-- needs: documents(texts)
-- Characters of all text positions of each document in the latest document shards.
SELECT aggregate(texts, 0L, (acc, t) -> acc + coalesce(length(t), 0)) AS value, 'documents' AS series
FROM {documents}
