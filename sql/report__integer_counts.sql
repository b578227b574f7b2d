-- Building block of the quality report (not a metric): how many rows hold each integer value
-- of the metric view {values} (columns: value, series); for counts such as images per document
-- or duplicate cluster sizes, where equal-width bins would blur the small values that matter.
SELECT series, CAST(value AS BIGINT) AS k, count(*) AS n
FROM {values}
WHERE value IS NOT NULL
GROUP BY series, CAST(value AS BIGINT)
ORDER BY series, k
