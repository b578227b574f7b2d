-- title: CLIP score of scored pairs
-- kind: numeric
-- needs: pairs(clip_score)
-- pick: first
-- Cosine of the L2-normalised CLIP image and caption embeddings, per caption source, in the
-- stage that scored them (LAION keeps >= 0.28 with ViT-B/32; DataComp keeps a top fraction).
SELECT clip_score AS value, caption_source AS series
FROM {pairs}
WHERE clip_score IS NOT NULL
