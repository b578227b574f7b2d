-- title: Caption source of pairs
-- kind: categorical
-- needs: pairs(caption_source)
-- Where the caption of each pair in the latest pair shards came from (alt, figcaption, title;
-- web or synthetic after CapFilt).
SELECT caption_source AS category
FROM {pairs}
