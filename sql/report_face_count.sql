-- title: Faces per image
-- kind: numeric
-- bins: integer
-- needs: pairs(url, face_count)
-- pick: first
-- Faces the OpenCV cascade found per unique image of the scored pairs (models/faces.py; a lower
-- bound: profiles and small faces are missed). 0 = MMC4's "fewer faces".
SELECT max(face_count) AS value, 'images' AS series
FROM {pairs}
WHERE face_count IS NOT NULL
GROUP BY url
