-- title: Caption length of pairs (words)
-- kind: numeric
-- bins: integer
-- needs: pairs(caption)
-- Words per caption in the latest pair shards, per caption source.
SELECT size(split(trim(caption), '\\s+')) AS value, caption_source AS series
FROM {pairs}
WHERE caption IS NOT NULL AND trim(caption) <> ''
