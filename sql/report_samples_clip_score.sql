-- title: Sample pairs by CLIP score
-- kind: samples
-- needs: pairs(image, clip_score)
-- pick: first
-- The {k} best, the {k} nearest the median and the {k} worst scored pairs, so a person can see
-- what a threshold keeps. Each band is a top-k (no global sort of the image bytes).
WITH s AS (
  SELECT key, caption, caption_source, image, clip_score AS score
  FROM {pairs}
  WHERE clip_score IS NOT NULL AND image IS NOT NULL
),
m AS (SELECT percentile_approx(score, 0.5D, 10000) AS med FROM s)
(SELECT 'best' AS band, key, caption, caption_source, image, score FROM s ORDER BY score DESC, key LIMIT {k})
UNION ALL
(SELECT 'median' AS band, key, caption, caption_source, image, score
 FROM s CROSS JOIN m ORDER BY abs(score - med), key LIMIT {k})
UNION ALL
(SELECT 'worst' AS band, key, caption, caption_source, image, score FROM s ORDER BY score ASC, key LIMIT {k})
