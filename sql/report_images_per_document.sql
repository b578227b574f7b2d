-- title: Images per document
-- kind: numeric
-- bins: integer
-- needs: documents(images)
-- Image positions kept in each document of the latest document shards.
SELECT size(filter(images, i -> i IS NOT NULL)) AS value, 'documents' AS series
FROM {documents}
