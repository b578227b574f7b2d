-- title: Image aspect ratio (width / height)
-- kind: numeric
-- needs: src=images(width, height) | src=pairs(width, height)
-- OBELICS keeps aspect ratios within [1/2, 2]; DataComp's basic filter within [1/3, 3].
SELECT CAST(width AS DOUBLE) / height AS value, 'images' AS series
FROM {src}
WHERE width > 0 AND height > 0
