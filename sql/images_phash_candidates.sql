-- Images stage: pHash near-duplicate edges by a banded LSH join.
-- {hashes}: url, pixels, h (the 64-bit pHash as bigint), bands (the hash cut into
-- max_distance + 1 bit bands: filters.image.phash_band_values). Two hashes within
-- {max_distance} bits agree on at least one band (pigeonhole), so joining on
-- (band, value) finds every pair; the Hamming distance is verified here.
-- Each edge points from the preferred image (most pixels, then the smallest URL:
-- filters.image.preference_order) to the other one.
WITH banded AS (
  SELECT url, pixels, h, band, v
  FROM {hashes}
  LATERAL VIEW posexplode(bands) b AS band, v
)
SELECT DISTINCT a.url AS src, b.url AS dst, a.pixels AS src_pixels, bit_count(a.h ^ b.h) AS distance
FROM banded a JOIN banded b ON a.band = b.band AND a.v = b.v
WHERE (a.pixels > b.pixels OR (a.pixels = b.pixels AND a.url < b.url))
  AND bit_count(a.h ^ b.h) <= {max_distance}
