-- Building block of the quality report (not a metric): rows per category of the metric view
-- {values} (column: category), largest first; the report folds the tail into "other".
SELECT coalesce(CAST(category AS STRING), '(none)') AS category, count(*) AS n
FROM {values}
GROUP BY coalesce(CAST(category AS STRING), '(none)')
ORDER BY n DESC, category
