-- Dedup step 4: paragraphs repeated across a domain (OBELICS step 9).
-- A text position holds the paragraphs between two images joined by a blank
-- line ({paragraph_sep}: curation.layout.PARAGRAPH_SEP, as extract writes them);
-- each paragraph is counted on its own.
-- Its normalised form is lower case, digits -> 0, every run of
-- non-letter/digit characters -> one space. A paragraph whose normalised form
-- occurs in more than {max_per_domain} documents of the same domain is
-- boilerplate: every occurrence is removed.
-- Output: (doc_id, pos, ppos, n_docs) of every paragraph to remove
-- (pos = text position, ppos = paragraph index inside it).
WITH paras AS (
  SELECT
    d.doc_id,
    d.domain,
    p.pos,
    q.ppos,
    trim(regexp_replace(regexp_replace(lower(q.para), '(?U)\\d', '0'), '(?U)[\\W_]+', ' ')) AS norm
  FROM {docs} d
  LATERAL VIEW posexplode(d.texts) p AS pos, txt
  LATERAL VIEW posexplode(split(p.txt, '{paragraph_sep}')) q AS ppos, para
  WHERE p.txt IS NOT NULL AND d.domain IS NOT NULL
),
hashed AS (
  SELECT doc_id, domain, pos, ppos, xxhash64(norm) AS phash FROM paras WHERE norm <> ''
),
frequent AS (
  SELECT domain, phash, COUNT(DISTINCT doc_id) AS n_docs
  FROM hashed
  GROUP BY domain, phash
  HAVING COUNT(DISTINCT doc_id) > {max_per_domain}
)
SELECT h.doc_id, h.pos, h.ppos, f.n_docs
FROM hashed h JOIN frequent f ON h.domain = f.domain AND h.phash = f.phash
