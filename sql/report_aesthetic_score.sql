-- title: Aesthetic score of scored pairs
-- kind: numeric
-- needs: pairs(aesthetic_score)
-- pick: first
-- LAION's aesthetic predictor (linear head on the CLIP image embedding, roughly a 1-10 rating), per
-- caption source, in the stage that scored them; null (left out) where no released head fits.
SELECT aesthetic_score AS value, caption_source AS series
FROM {pairs}
WHERE aesthetic_score IS NOT NULL
