-- title: Image size (pixels)
-- kind: numeric
-- scale: log
-- needs: src=images(width, height) | src=pairs(width, height)
-- Width and height of every kept image (the image stage's unique images, or the pairs when
-- a run has no image table).
SELECT width AS value, 'width' AS series FROM {src} WHERE width IS NOT NULL
UNION ALL
SELECT height AS value, 'height' AS series FROM {src} WHERE height IS NOT NULL
