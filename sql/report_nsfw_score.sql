-- title: NSFW score of scored pairs
-- kind: numeric
-- needs: pairs(nsfw_score)
-- pick: first
-- P(NSFW) from LAION's NSFW head on the CLIP image embedding (models/safety_heads.py), per caption
-- source, in the stage that scored them; null (left out) where no released head fits the score
-- model. safety.max_nsfw rejects above it (docs/safety.md).
SELECT nsfw_score AS value, caption_source AS series
FROM {pairs}
WHERE nsfw_score IS NOT NULL
