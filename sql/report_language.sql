-- title: Document language (fastText lid.176)
-- kind: categorical
-- needs: documents(lang)
-- Language of each document in the latest document shards.
SELECT lang AS category
FROM {documents}
