-- Connected components, large-star step (Kiveris et al. 2014, "Connected
-- Components in MapReduce and Beyond").
-- For every node u with neighbourhood N(u): m(u) = min(N(u) and u);
-- connect every LARGER neighbour v > u to m(u).
-- {edges}: undirected edges (src, dst). Output: edges (src = v, dst = m(u)).
WITH sym AS (
  SELECT src AS u, dst AS v FROM {edges}
  UNION ALL
  SELECT dst AS u, src AS v FROM {edges}
),
mins AS (
  SELECT u, LEAST(u, MIN(v)) AS m FROM sym GROUP BY u
)
SELECT DISTINCT s.v AS src, mins.m AS dst
FROM sym s JOIN mins ON s.u = mins.u
WHERE s.v > s.u
