-- Connected components, small-star step (Kiveris et al. 2014).
-- Orient every edge from the larger to the smaller node; for every node u with
-- smaller neighbours N(u): m(u) = min(N(u) and u); connect every node of
-- N(u) and u other than m(u) to m(u).
-- At the fixed point of large-star + small-star every node points to the
-- smallest node of its component.
WITH oriented AS (
  SELECT GREATEST(src, dst) AS u, LEAST(src, dst) AS v FROM {edges} WHERE src <> dst
),
mins AS (
  SELECT u, LEAST(u, MIN(v)) AS m FROM oriented GROUP BY u
)
SELECT DISTINCT o.v AS src, mins.m AS dst
FROM oriented o JOIN mins ON o.u = mins.u
WHERE o.v <> mins.m
UNION
SELECT u AS src, m AS dst FROM mins WHERE u <> m
