"""bench/scale_corpus.py: N distinct real pages in WARCs, planted near-duplicate pages, distinct photos."""
from __future__ import annotations

import hashlib
import io
import json
import re

from PIL import Image

from bench.scale_corpus import CorpusConfig, build_corpus, shuffle_text
from curation.warc_reader import ResponseRecord, iter_warc
from tests.support.realdata import realdata_path

IMG_SRC = re.compile(rb'<img\b[^>]*\bsrc="([^"]+)"', re.I)


def test_shuffle_text_keeps_words_and_tags():
    import random

    page = "<html><title>a b c d e</title><script>var x = 1 + 2 + 3;</script><p>one two three four five</p></html>"
    out = shuffle_text(page, random.Random(1))
    assert out.count("<p>") == 1 and "<title>a b c d e</title>" in out and "var x = 1 + 2 + 3;" in out
    body = re.search(r"<p>(.*)</p>", out).group(1)
    assert sorted(body.split()) == sorted("one two three four five".split())


def test_corpus_pages_duplicates_and_images(tmp_path):
    rd = realdata_path()
    n = 60
    cfg = CorpusConfig(pages=n, seed=3, port=8999, pages_per_warc=25, near_dup_fraction=0.15,
                       repeat_image_fraction=0.1, exact_image_fraction=0.1, near_image_fraction=0.1, realdata=str(rd))
    c = build_corpus(tmp_path / "corpus", cfg)
    manifest = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    truth = json.loads((tmp_path / "corpus" / "ground_truth.json").read_text())
    assert manifest["pages"] == c.pages == n and len(c.warc_files) == 3

    recs = [r for w in sorted((tmp_path / "corpus" / "warc").iterdir()) for r in iter_warc(str(w))]
    assert all(isinstance(r, ResponseRecord) for r in recs)
    urls = [r.target_uri for r in recs]
    assert len(urls) == n and len(set(urls)) == n == c.distinct_urls
    bodies = {r.target_uri: r.payload for r in recs}
    assert len(set(bodies.values())) == n  # no two pages byte-identical

    # planted near duplicates: named in the ground truth, their original is in the corpus, most text shared
    assert c.near_duplicate_pages == len(truth["near_duplicate_pages"]) >= 3
    for dup, orig in truth["near_duplicate_pages"]:
        assert dup in bodies and orig in bodies
        a, b = set(bodies[dup].split()), set(bodies[orig].split())
        assert len(a & b) / len(a | b) > 0.9

    # every image points at the loopback base and exists; repeated URLs are planted
    srcs = [s.decode() for body in bodies.values() for s in IMG_SRC.findall(body)]
    assert srcs and all(s.startswith("http://127.0.0.1:8999/img/") for s in srcs)
    assert len(srcs) == c.image_occurrences and len(set(srcs)) == c.image_urls
    assert c.repeated_image_occurrences >= 1
    files = sorted((tmp_path / "corpus" / "images" / "img").iterdir())
    assert len(files) == c.image_urls
    digests = {}
    for f in files:
        digests.setdefault(hashlib.sha256(f.read_bytes()).hexdigest(), []).append(int(f.stem))
    exact = {i for i, _ in truth["exact_duplicate_images"]}
    # distinct bytes except the planted exact copies
    assert len(digests) == c.image_urls - len(exact) and len(exact) >= 1
    for i, j in truth["exact_duplicate_images"]:
        assert (files[i].read_bytes() == files[j].read_bytes())
    assert len(truth["near_duplicate_images"]) >= 1
    for f in files[:20]:
        with Image.open(io.BytesIO(f.read_bytes())) as im:
            assert im.format == "JPEG" and min(im.size) >= cfg.min_side and 0.5 <= im.size[0] / im.size[1] <= 2.0
