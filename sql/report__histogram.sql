-- Building block of the quality report (not a metric): equal-width histogram of the
-- metric view {values} (columns: value, series), {bins} bins between the global min and max
-- of {transform} (the value itself, or log10(1 + value) for metrics drawn on a log scale).
-- One row per (series, bin) that holds values; the edges are lo + bin * width .. + width.
WITH v AS (
  SELECT series, {transform} AS x
  FROM {values}
  WHERE value IS NOT NULL AND NOT isnan(CAST(value AS DOUBLE)) {where}
),
r AS (
  SELECT min(x) AS lo,
         CASE WHEN max(x) > min(x) THEN (max(x) - min(x)) / {bins} ELSE 1.0D END AS width
  FROM v
)
SELECT v.series,
       LEAST(CAST(floor((v.x - r.lo) / r.width) AS INT), {bins} - 1) AS bin,
       first(r.lo) AS lo,
       first(r.width) AS width,
       count(*) AS n
FROM v CROSS JOIN r
GROUP BY v.series, LEAST(CAST(floor((v.x - r.lo) / r.width) AS INT), {bins} - 1)
ORDER BY series, bin
