-- title: ITM score of bootstrapped pairs (CapFilt filter)
-- kind: numeric
-- needs: pairs(itm_score)
-- The filter's p(match) per caption that passed it, web and synthetic captions apart
-- (BLIP keeps a caption when p(match) >= 0.5).
SELECT itm_score AS value, caption_source AS series
FROM {pairs}
WHERE itm_score IS NOT NULL
