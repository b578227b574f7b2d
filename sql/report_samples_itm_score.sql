-- title: Sample pairs by ITM score (CapFilt)
-- kind: samples
-- needs: pairs(image, itm_score)
-- The {k} best, the {k} nearest the median and the {k} worst captions by the filter's
-- p(match), web and synthetic together.
WITH s AS (
  SELECT key, caption, caption_source, image, itm_score AS score
  FROM {pairs}
  WHERE itm_score IS NOT NULL AND image IS NOT NULL
),
m AS (SELECT percentile_approx(score, 0.5D, 10000) AS med FROM s)
(SELECT 'best' AS band, key, caption, caption_source, image, score FROM s ORDER BY score DESC, key LIMIT {k})
UNION ALL
(SELECT 'median' AS band, key, caption, caption_source, image, score
 FROM s CROSS JOIN m ORDER BY abs(score - med), key LIMIT {k})
UNION ALL
(SELECT 'worst' AS band, key, caption, caption_source, image, score FROM s ORDER BY score ASC, key LIMIT {k})
