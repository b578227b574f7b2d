-- Building block of the quality report (not a metric): count, mean, spread and quantiles of
-- the metric view {values} (columns: value, series), per series and over all rows
-- (the row whose series is null).
SELECT series,
       count(*) AS n,
       min(v) AS min,
       max(v) AS max,
       avg(v) AS mean,
       stddev_samp(v) AS std,
       percentile_approx(v, array(0.05D, 0.25D, 0.5D, 0.75D, 0.95D), 10000) AS quantiles
FROM (
  SELECT series, CAST(value AS DOUBLE) AS v
  FROM {values}
  WHERE value IS NOT NULL AND NOT isnan(CAST(value AS DOUBLE))
)
GROUP BY GROUPING SETS ((series), ())
