"""Cross-snapshot dedup state (pipelines/dedup_state.py): two small snapshots with a planted overlap run
one after the other with one ``dedup.state_dir``; the second rejects exactly the overlap, a rerun of the
first changes nothing, ``newer_wins`` lists the earlier documents instead of rejecting."""
from __future__ import annotations

import json
import random
import string
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.config import PipelineConfig
from curation.errors import ConfigError
from curation.minhash import batch_shingles, normalize_text
from curation.schemas import DOCUMENTS
from pipelines.dedup_state import DedupState

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _pages(seed: int = 0):
    """Snapshot A: 30 pages. Snapshot B: 6 recaptures (same URL), 6 mirrors (same text, new URL), 8 light
    edits (3 words of 300: Jaccard ~0.9), 6 heavy edits (25 words: ~0.4, distinct), 20 new pages."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9))) for _ in range(5000)]

    def page():
        return [rng.choice(vocab) for _ in range(300)]

    def edit(words, k):
        w = list(words)
        for i in rng.sample(range(len(w)), k):
            w[i] = rng.choice(vocab)
        return w

    a = [page() for _ in range(30)]
    docs_a = [_doc(f"A-{i}", f"http://a.test/{i}", a[i], "A") for i in range(30)]
    docs_b = [_doc(f"B-{i}", f"http://a.test/{i}", a[i], "B") for i in range(6)]
    docs_b += [_doc(f"B-{6 + i}", f"http://mirror.test/{i}", a[6 + i], "B") for i in range(6)]
    docs_b += [_doc(f"B-{12 + i}", f"http://b.test/e{i}", edit(a[12 + i], 3), "B") for i in range(8)]
    docs_b += [_doc(f"B-{20 + i}", f"http://b.test/h{i}", edit(a[20 + i], 25), "B") for i in range(6)]
    docs_b += [_doc(f"B-{26 + i}", f"http://b.test/n{i}", page(), "B") for i in range(20)]
    planted = {f"B-{i}": f"A-{i}" for i in range(20)}
    return docs_a, docs_b, planted


def _doc(doc_id: str, url: str, words: list[str], snapshot: str) -> dict:
    return dict(doc_id=doc_id, url=url, texts=[" ".join(words[:150]), None, " ".join(words[150:])],
                images=[None, f"{url}/img.jpg", None], metadata=json.dumps([None, {"src": f"{url}/img.jpg"}, None]),
                general_metadata=json.dumps({"url": url, "snapshot": snapshot, "warc_date": "2024-03-01T00:00:00Z"}),
                lang="en", lang_score=0.9)


def _jaccard(a: dict, b: dict) -> float:
    texts = [normalize_text("\n".join(t for t in d["texts"] if t)) for d in (a, b)]
    hs, docs = batch_shingles(texts, 5)
    x, y = set(hs[docs == 0].tolist()), set(hs[docs == 1].tolist())
    return len(x & y) / len(x | y)


def _run(tmp: Path, name: str, snapshot: str, docs: list[dict], state_dir: Path, policy: str = "first_seen"):
    """The dedup stage on a tiny document table, with the state; returns (kept ids, rejects rows, stats, out)."""
    from curation.stage import StageRunner
    from pipelines.spark_dedup import DedupStage

    inp = tmp / f"in-{name}"
    (inp / "documents").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(docs, schema=DOCUMENTS), inp / "documents" / "part-0.parquet")
    out = tmp / f"out-{name}"
    cfg = PipelineConfig.load(overrides={
        "snapshot": snapshot, "out": str(out), "dedup.state_dir": str(state_dir), "dedup.state_policy": policy,
        "spark.master": "local[2]", "spark.shuffle_partitions": 4, "spark.show_progress": False})
    stats = StageRunner(str(out), cfg).run(DedupStage(), {"documents": str(inp / "documents")})
    kept = set(pq.read_table(out / "dedup" / "documents", columns=["doc_id"]).column(0).to_pylist())
    rejects = pq.read_table(out / "dedup" / "rejects").to_pylist()
    return kept, rejects, stats, out


def test_second_snapshot_rejects_exactly_the_planted_overlap(spark, tmp_path):
    docs_a, docs_b, planted = _pages()
    state = tmp_path / "state"
    kept_a, rej_a, _, _ = _run(tmp_path, "a1", "A", docs_a, state)
    assert kept_a == {d["doc_id"] for d in docs_a} and rej_a == []
    assert json.loads((state / "runs" / "A.json").read_text())["order"] == 0

    kept_b, rej_b, stats_b, _ = _run(tmp_path, "b", "B", docs_b, state)
    seen = {r["row_id"]: r for r in rej_b if r["reason"].startswith("seen_in:")}
    # Recall at Jaccard >= 0.8 against A, and no distinct page lost (heavy edits and new pages kept).
    by_id = {d["doc_id"]: d for d in docs_a + docs_b}
    best = {d["doc_id"]: max(_jaccard(d, a) for a in docs_a) for d in docs_b}
    truth = {k for k, j in best.items() if j >= 0.8} | {f"B-{i}" for i in range(6)}  # + recaptures of a seen URL
    recall = len(truth & set(seen)) / len(truth)
    assert recall >= 0.95 and set(seen) <= truth
    assert set(seen) == set(planted) and {r["reason"] for r in seen.values()} == {"seen_in:A"}
    assert all(seen[k]["duplicate_of"] == planted[k] for k in seen)
    assert kept_b == {d["doc_id"] for d in docs_b} - set(planted)
    assert max(best[f"B-{i}"] for i in range(20, 26)) < 0.8  # the heavy edits are distinct, and kept
    assert stats_b.rejected == {"seen_in:A": 20} and stats_b.counters["seen_in_earlier_snapshots"] == 20
    print(json.dumps({"planted": len(planted), "rejected_seen": len(seen), "recall_at_0.8": recall,
                      "min_jaccard_rejected": round(min(best[k] for k in seen if k not in {f"B-{i}" for i in range(6)}), 3),
                      "max_jaccard_kept": round(max(best[k] for k in kept_b), 3)}))
    assert by_id  # (used above)

    # A rerun of the first snapshot (fresh run directory, same state, B recorded since) changes nothing.
    kept_a2, rej_a2, _, _ = _run(tmp_path, "a2", "A", docs_a, state)
    assert (kept_a2, rej_a2) == (kept_a, rej_a)
    assert json.loads((state / "runs" / "A.json").read_text())["order"] == 0
    assert json.loads((state / "runs" / "B.json").read_text())["order"] == 1

    # newer_wins: B keeps every page; the earlier A documents it supersedes go to a removal list.
    kept_b2, rej_b2, _, out = _run(tmp_path, "b2", "B", docs_b, state, policy="newer_wins")
    assert kept_b2 == {d["doc_id"] for d in docs_b} and rej_b2 == []
    removals = pq.read_table(out / "dedup" / "removals").to_pylist()
    assert len(removals) == len(planted)  # one row per superseded document, however many ways it matched
    assert {(r["snapshot"], r["doc_id"], r["superseded_by"]) for r in removals} == \
        {("A", a, b) for b, a in planted.items()}
    assert {r["reason"] for r in removals} == {"superseded_by:B"}

    # newer_wins for a snapshot "AA" curated third, newer than A, older than B: pages B holds lose
    # (seen_in:B), pages only A holds win and A's documents are listed.
    docs_aa = [{**docs_b[26 + i], "doc_id": f"AA-{i}"} for i in range(5)] + \
              [{**docs_a[25 + i], "doc_id": f"AA-{5 + i}"} for i in range(5)]
    kept_aa, rej_aa, _, out = _run(tmp_path, "aa", "AA", docs_aa, state, policy="newer_wins")
    assert {(r["row_id"], r["reason"]) for r in rej_aa} == {(f"AA-{i}", "seen_in:B") for i in range(5)}
    assert kept_aa == {f"AA-{5 + i}" for i in range(5)}
    assert {(r["snapshot"], r["doc_id"], r["superseded_by"]) for r in pq.read_table(out / "dedup" / "removals").to_pylist()} \
        == {("A", f"A-{25 + i}", f"AA-{5 + i}") for i in range(5)}


def test_manifest_order_and_partitions(tmp_path):
    st = DedupState(str(tmp_path), "X", partitions=8)
    assert st.earlier() == [] and st.manifests() == {}
    st._write_state_file()
    st._write_manifest({"documents": 1})
    DedupState(str(tmp_path), "Y")._write_manifest({"documents": 2})
    y = DedupState(str(tmp_path), "Y", partitions=64)
    assert y.partitions == 8  # an existing state keeps its partitioning, or lookups would miss
    assert y.earlier() == ["X"] and DedupState(str(tmp_path), "X").earlier() == []
    assert DedupState(str(tmp_path), "Z").earlier() == ["X", "Y"]
    DedupState(str(tmp_path), "X")._write_manifest({"documents": 3})  # a rerun keeps its place
    assert json.loads((tmp_path / "runs" / "X.json").read_text())["order"] == 0


def test_state_policy_validated():
    with pytest.raises(ConfigError, match="state_policy"):
        PipelineConfig.load(overrides={"dedup.state_policy": "latest"})
    assert np.isclose(PipelineConfig.load().dedup.jaccard_threshold, 0.8)
