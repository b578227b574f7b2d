"""pipelines/spark_dedup.py: every step, conservation, bad input, near-dup quality on real pages."""
from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.config import DedupConfig, PipelineConfig, SparkConfig
from curation.minhash import jaccard, shingles
from curation.schemas import DOCUMENTS, PAIRS, spark_ddl
from curation.spark import get_spark, java_available

pytestmark = [pytest.mark.spark, pytest.mark.skipif(not java_available(), reason="Spark needs Java 17")]

ROOT = Path(__file__).resolve().parents[2]
REALDATA = Path(os.environ.get("REALDATA_DIR", ROOT / ".." / "shared" / "realdata"))
DUP_REASONS = {"url_duplicate", "exact_duplicate", "near_duplicate", "image_set_duplicate"}


@pytest.fixture(scope="module")
def spark():
    return get_spark(SparkConfig(master="local[2]", shuffle_partitions=4, show_progress=False))


def make_doc(doc_id, url, texts=(), images=(), date="2024-01-01T00:00:00Z", warc="f1.warc.gz", order=None):
    """One DOCUMENTS row: text positions first then images (or interleaved by ``order`` of 't'/'i')."""
    order = order or ("t" * len(texts) + "i" * len(images))
    ti, ii = iter(texts), iter(images)
    t_col, i_col, meta = [], [], []
    for kind in order:
        if kind == "t":
            t_col.append(next(ti)); i_col.append(None); meta.append(None)
        else:
            u = next(ii)
            t_col.append(None); i_col.append(u)
            meta.append({"src": u, "alt_text": "alt", "rendered_width": 10, "rendered_height": 10})
    gm = {"url": url, "warc_filename": warc, "warc_record_offset": 0, "warc_record_length": 1,
          "warc_date": date, "snapshot": "TEST"}
    return dict(doc_id=doc_id, url=url, texts=t_col, images=i_col, metadata=json.dumps(meta),
                general_metadata=json.dumps(gm), lang="en", lang_score=0.9)


def make_pairs(docs):
    rows = []
    for d in docs:
        for pos, u in enumerate(d["images"] or []):
            if u:
                rows.append(dict(key=f"{d['doc_id']}#{pos}", url=u, caption="a caption", caption_source="alt",
                                 page_url=d["url"], doc_id=d["doc_id"]))
    return rows


def to_df(spark, rows, schema):
    return spark.createDataFrame(pa.Table.from_pylist(rows, schema=schema).to_pandas(), spark_ddl(schema))


def run(spark, docs, pairs=None, **cfg):
    from pipelines.spark_dedup import run_dedup

    pdf = to_df(spark, pairs if pairs is not None else make_pairs(docs), PAIRS)
    return run_dedup(spark, to_df(spark, docs, DOCUMENTS), pdf, DedupConfig(**cfg))


def collect(res):
    docs = {r["doc_id"]: r.asDict() for r in res.documents.collect()}
    rej = [r.asDict() for r in res.rejects.collect()]
    pairs = {r["key"]: r.asDict() for r in res.pairs.collect()}
    return docs, rej, pairs


def check_conservation(docs_in, pairs_in, kept, rej, pairs_kept):
    doc_rej = {r["row_id"]: r for r in rej if r["table"] == "documents"}
    assert len(doc_rej) == sum(1 for r in rej if r["table"] == "documents"), "a document rejected twice"
    assert set(kept) | set(doc_rej) == {d["doc_id"] for d in docs_in}
    assert not set(kept) & set(doc_rej)
    pair_rej = {r["row_id"] for r in rej if r["table"] == "pairs"}
    assert set(pairs_kept) | pair_rej == {p["key"] for p in pairs_in} and not set(pairs_kept) & pair_rej
    for r in doc_rej.values():
        if r["reason"] in DUP_REASONS:
            assert r["duplicate_of"] in kept, r
    for d in kept.values():  # aligned positions, exactly one of text/image per position
        assert len(d["texts"]) == len(d["images"]) == len(json.loads(d["metadata"]))
        assert all((t is None) != (i is None) for t, i in zip(d["texts"], d["images"]))
        for i, m in zip(d["images"], json.loads(d["metadata"])):
            assert (m is None) == (i is None) and (m is None or m["src"] == i)


LOREM = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega").split()


def prose(seed: int, n: int = 120) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(LOREM) + str(rng.randrange(50)) if rng.random() < 0.3 else rng.choice(LOREM)
                    for _ in range(n)) + f" doc{seed}"


def test_every_step(spark):
    a = prose(1)
    edited = a.split()
    edited[60] = "CHANGED"
    docs = [
        # 1. URL: same page twice (http://Site.com/p/ == http://site.com/p), the later capture wins.
        make_doc("u1", "http://Site.com/p/#top", [prose(10)], ["http://img/u1.jpg"], date="2023-01-01T00:00:00Z"),
        make_doc("u2", "http://site.com:80/p", [prose(11)], ["http://img/u2.jpg"], date="2024-05-01T00:00:00Z"),
        # 2. exact: same text up to case/punctuation/digits; the longer raw text is kept.
        make_doc("e1", "http://x.org/1", [a], ["http://img/e1.jpg"]),
        make_doc("e2", "http://x.org/2", [a.upper() + "!!!"], ["http://img/e2.jpg"]),
        # 3. near: one word changed.
        make_doc("n1", "http://y.org/1", [" ".join(edited)], ["http://img/n1.jpg"]),
        # 4. paragraphs: the same footer on 3 pages of one domain (> 2) goes; the page text stays.
        *[make_doc(f"p{i}", f"http://www.blog.net/{i}", [prose(20 + i), "Copyright 2024 Blog. All rights reserved."],
                   [f"http://img/p{i}.jpg"], order="tit") for i in range(3)],
        # 5. images: one URL on 12 documents (> 10) is dropped everywhere; a repeat inside a doc keeps the first.
        *[make_doc(f"c{i:02d}", f"http://z{i}.com/", [prose(40 + i)], ["http://img/common.gif", f"http://img/c{i}.jpg"],
                   order="iti") for i in range(12)],
        make_doc("r1", "http://r.com/", [prose(60), prose(61)], ["http://img/r.jpg", "http://img/r.jpg"], order="itit"),
        # 5. identical image sets: s2 has the same images as s1 and a shorter text.
        make_doc("s1", "http://s.com/1", [prose(70, 200)], ["http://img/s.jpg", "http://img/t.jpg"]),
        make_doc("s2", "http://s.com/2", [prose(71, 100)], ["http://img/t.jpg", "http://img/s.jpg"]),
        # 6. no text left
        make_doc("empty", "http://q.com/", ["   ", ""], ["http://img/q.jpg"]),
    ]
    pairs = make_pairs(docs) + [dict(key="orphan", url="http://img/o.jpg", caption="c", caption_source="alt",
                                     page_url="http://o.com", doc_id="nope")]
    res = run(spark, docs, pairs, jaccard_threshold=0.72)
    kept, rej, pairs_kept = collect(res)
    check_conservation(docs, pairs, kept, rej, pairs_kept)
    reason = {r["row_id"]: (r["reason"], r["duplicate_of"]) for r in rej}
    assert reason["u1"] == ("url_duplicate", "u2")
    assert reason["e1"] == ("exact_duplicate", "e2")
    assert reason["n1"] == ("near_duplicate", "e2")
    assert reason["s2"] == ("image_set_duplicate", "s1")
    assert reason["empty"][0] == "no_text"
    assert reason["orphan"][0] == "doc_missing"
    assert reason["n1#1"][0] == "doc_removed"
    for i in range(3):
        assert kept[f"p{i}"]["texts"] == [prose(20 + i), None]
        assert kept[f"p{i}"]["images"] == [None, f"http://img/p{i}.jpg"]
    for i in range(12):
        d = kept[f"c{i:02d}"]
        assert d["images"] == [None, f"http://img/c{i}.jpg"] and d["texts"] == [prose(40 + i), None]
        assert reason[f"c{i:02d}#0"][0] == "image_too_common" and f"c{i:02d}#2" in pairs_kept
    assert kept["r1"]["images"] == ["http://img/r.jpg", None, None] and kept["r1"]["texts"] == [None, prose(60), prose(61)]
    c = res.counters
    assert (c["url_duplicates"], c["exact_duplicates"], c["near_duplicates"], c["image_set_duplicates"]) == (1, 1, 1, 1)
    assert c["paragraphs_removed"] == 3 and c["images_too_common_urls"] == 1
    assert c["image_positions_too_common"] == 12 and c["image_positions_repeated_in_doc"] == 1
    assert c["cc_converged"] and c["near_component_size_histogram"]["2"] == 1


def test_bad_input(spark, tmp_path):
    """Empty texts, a 1 MB word, invalid UTF-8 / lone surrogates, 2,000 identical documents: counted, no crash."""
    same = prose(99)
    docs = [make_doc("empty1", "http://b.com/1", [], ["http://img/b1.jpg"]),
            make_doc("empty2", "http://b.com/2", ["", "  "], []),
            make_doc("huge", "http://b.com/3", ["x" * 1_000_000], []),
            make_doc("bad_utf8", "http://b.com/4", ["PLACEHOLDER", prose(5)], []),
            make_doc("surrogate", "http://b.com/5", ["PLACEHOLDER2"], [])]
    docs += [make_doc(f"same{i:04d}", f"http://m{i}.com/", [same], []) for i in range(2000)]
    table = pa.Table.from_pylist(docs, schema=DOCUMENTS)
    # Put raw bytes that are not UTF-8 (0xff, an encoded lone surrogate) into two texts, bypassing validation.
    texts = table.column("texts").combine_chunks()
    vals = [v.encode() for v in texts.values.to_pylist() if v is not None]
    raw = []
    for v in texts.values.to_pylist():
        if v == "PLACEHOLDER":
            raw.append(b"caf\xe9 \xff\xfe broken bytes " + b"word " * 10)
        elif v == "PLACEHOLDER2":
            raw.append("lone \udcff surrogate text here".encode("utf-8", "surrogatepass"))
        else:
            raw.append(None if v is None else v.encode())
    assert vals
    bad_values = pa.array(raw, pa.binary()).view(pa.string())
    bad = pa.ListArray.from_arrays(texts.offsets, bad_values)
    table = table.set_column(table.schema.get_field_index("texts"), "texts", bad)
    path = tmp_path / "docs.parquet"
    pq.write_table(table, path)
    from pipelines.spark_dedup import run_dedup

    df = spark.read.schema(spark_ddl(DOCUMENTS)).parquet(str(path))
    res = run_dedup(spark, df, None, DedupConfig(url_dedup=False, exact_dedup=False))
    kept = {r["doc_id"] for r in res.documents.select("doc_id").collect()}
    rej = {r["row_id"]: r.asDict() for r in res.rejects.collect()}
    assert kept | set(rej) == {d["doc_id"] for d in docs} and not kept & set(rej)
    assert rej["empty1"]["reason"] == rej["empty2"]["reason"] == "no_text"
    assert {"huge", "bad_utf8", "surrogate", "same0000"} <= kept
    assert sum(1 for r in rej.values() if r["reason"] == "near_duplicate" and r["duplicate_of"] == "same0000") == 1999
    assert res.counters["near_component_size_histogram"][">1000"] == 1
    assert res.counters["near_component_size_max"] == 2000


def _real_pages(min_words=150):
    fastwarc = pytest.importorskip("fastwarc.warc")
    lexbor = pytest.importorskip("selectolax.lexbor")
    warcs = sorted((REALDATA / "warc").glob("*.warc.gz"))
    if not warcs:
        pytest.skip(f"no WARC files under {REALDATA / 'warc'} (set REALDATA_DIR)")
    pages = []
    for p in warcs:
        with open(p, "rb") as fh:
            for rec in fastwarc.ArchiveIterator(fh, parse_http=True):
                if rec.record_type != fastwarc.WarcRecordType.response:
                    continue
                body = rec.reader.read()
                if b"<html" not in body[:4096].lower():
                    continue
                tree = lexbor.LexborHTMLParser(body.decode("utf-8", "replace"))
                if tree.body is None:
                    continue
                text = " ".join(tree.body.text(separator=" ").split())
                if len(text.split()) >= min_words:
                    pages.append(text)
    return pages


def _variant(words, target, rng, base_sh):
    """Replace words at random positions until the shingle Jaccard with the original drops to ~target."""
    order = list(range(len(words)))
    rng.shuffle(order)
    lo, hi = 0, len(words)
    best = None
    while lo <= hi:
        k = (lo + hi) // 2
        w = list(words)
        for i in order[:k]:
            w[i] = f"edit{rng.randrange(10**9)}"
        text = " ".join(w)
        j = jaccard(base_sh, shingles(text))
        if best is None or abs(j - target) < abs(best[1] - target):
            best = (text, j)
        if j > target:
            lo = k + 1
        else:
            hi = k - 1
    return best[0]


def test_near_dup_quality_on_real_pages(spark):
    """Precision and recall of detected pairs at true Jaccard >= 0.8 (both >= 0.95), and agreement with datasketch.

    Set: real pages from the WARC files (>= 150 words) plus, per page, copies with words replaced at random
    to land near true Jaccard 0.95, 0.9, 0.85, 0.8, 0.7, 0.5 and 0.3. True Jaccard is computed exactly for
    every pair of documents from their shingle sets. "Detected pairs" = the near-dup edges the pipeline keeps
    (LSH band collision + exact-Jaccard verification at 0.8). Precision = detected pairs with true J >= 0.8 /
    detected; recall = true pairs (J >= 0.8) found as edges, directly or through the component
    (both in one component).

    Agreement with datasketch: MinHashLSH(threshold=0.72, num_perm=112, params=(14, 8)) over MinHash of the
    same shingles (our 64-bit shingle hashes as 8-byte strings), candidates verified at the same 0.8,
    components by union-find in the test (a reference, not the pipeline), one kept per component by the same
    rule. Agreement = fraction of documents that both keep or both remove; required >= 0.95.
    """
    datasketch = pytest.importorskip("datasketch")
    pages = _real_pages()
    if len(pages) < 10:
        pytest.skip(f"only {len(pages)} real pages with >= 150 words under {REALDATA}")
    rng = random.Random(42)
    pages = pages[:30]
    texts, ids = [], []
    for pi, page in enumerate(pages):
        words = page.split()[:600]
        base_sh = shingles(" ".join(words))
        texts.append(" ".join(words)); ids.append(f"p{pi:02d}-base")
        for t in (0.95, 0.9, 0.85, 0.8, 0.7, 0.5, 0.3):
            texts.append(_variant(words, t, rng, base_sh)); ids.append(f"p{pi:02d}-{int(t * 100)}")
    sh = [shingles(t) for t in texts]
    n = len(texts)
    truth = {}
    for i, j in itertools.combinations(range(n), 2):
        if ids[i][:3] == ids[j][:3] or len(np.intersect1d(sh[i], sh[j])) > 0:
            truth[tuple(sorted((ids[i], ids[j])))] = jaccard(sh[i], sh[j])
    positives = {p for p, v in truth.items() if v >= 0.8}
    assert len(positives) >= 100

    docs = [make_doc(ids[i], f"http://real{i}.test/", [texts[i]], []) for i in range(n)]
    res = run(spark, docs, [], url_dedup=False, exact_dedup=False, paragraph_dedup=False, image_dedup=False,
              image_set_dedup=False, jaccard_threshold=0.8)
    edges = {tuple(sorted((r["src"], r["dst"]))) for r in res.near_pairs.collect()}
    kept = {r["doc_id"] for r in res.documents.select("doc_id").collect()}
    rej = {r["row_id"]: r["duplicate_of"] for r in res.rejects.collect()}
    comp = {d: rej.get(d, d) for d in ids}
    precision = sum(1 for e in edges if truth.get(e, 0.0) >= 0.8) / max(1, len(edges))
    recall_edges = len(edges & positives) / len(positives)
    recall = sum(1 for a, b in positives if comp[a] == comp[b]) / len(positives)
    print(f"pairs>=0.8: {len(positives)} edges: {len(edges)} precision {precision:.3f} "
          f"recall(edges) {recall_edges:.3f} recall(components) {recall:.3f}")
    assert precision >= 0.95 and recall >= 0.95 and recall_edges >= 0.9

    # datasketch reference on the same shingles
    lsh = datasketch.MinHashLSH(threshold=0.72, num_perm=112, params=(14, 8))
    mhs = []
    for i in range(n):
        m = datasketch.MinHash(num_perm=112, seed=1)
        m.update_batch([int(h).to_bytes(8, "little") for h in sh[i]])
        mhs.append(m)
        lsh.insert(ids[i], m)
    parent = {d: d for d in ids}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    index = {d: i for i, d in enumerate(ids)}
    for i in range(n):
        for other in lsh.query(mhs[i]):
            if other != ids[i] and jaccard(sh[i], sh[index[other]]) >= 0.8:
                parent[find(other)] = find(ids[i])
    groups = {}
    for d in ids:
        groups.setdefault(find(d), []).append(d)
    ds_kept = {min(g, key=lambda d: (-len(texts[index[d]]), d)) for g in groups.values()}
    agree = sum(1 for d in ids if (d in kept) == (d in ds_kept)) / n
    print(f"kept: ours {len(kept)} datasketch {len(ds_kept)} agreement {agree:.3f}")
    assert agree >= 0.95


def test_stage_runner_writes_outputs(spark, tmp_path):
    from curation.stage import StageRunner, read_stats
    from pipelines.spark_dedup import DedupStage

    docs = [make_doc("a", "http://a.com/", [prose(1)], ["http://img/a.jpg"]),
            make_doc("b", "http://a.com", [prose(2)], ["http://img/b.jpg"], date="2025-01-01T00:00:00Z"),
            make_doc("c", "http://c.com/", [prose(2)], ["http://img/c.jpg"])]
    inp = tmp_path / "extract"
    (inp / "documents").mkdir(parents=True)
    (inp / "pairs").mkdir()
    pq.write_table(pa.Table.from_pylist(docs, schema=DOCUMENTS), inp / "documents" / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(make_pairs(docs), schema=PAIRS), inp / "pairs" / "part-0.parquet")
    cfg = PipelineConfig()
    cfg.spark = SparkConfig(master="local[2]", shuffle_partitions=4, show_progress=False)
    stats = StageRunner(str(tmp_path / "out"), cfg).run(
        DedupStage(), {"documents": str(inp / "documents"), "pairs": str(inp / "pairs")})
    assert stats.rows_in == 3 and stats.rows_out == 1 and stats.conserved()
    assert stats.rejected == {"url_duplicate": 1, "exact_duplicate": 1}
    assert stats.tables["pairs"] == {"rows_in": 3, "rows_out": 1, "rejected": {"doc_removed": 2}}
    assert read_stats(str(tmp_path / "out" / "dedup")).rows_out == 1
    out = pq.read_table(tmp_path / "out" / "dedup" / "documents")
    assert out.column("doc_id").to_pylist() == ["b"]
    rej = pq.read_table(tmp_path / "out" / "dedup" / "rejects").to_pylist()
    assert {r["stage"] for r in rej} == {"dedup"} and len(rej) == 4
