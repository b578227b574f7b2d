"""The same dedup result, row for row, on local[1], local[2] and a Spark standalone cluster (master + 1 worker)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.sample.text import letter_word
from curation.schemas import DOCUMENTS, PAIRS
from curation.spark import java_available
from tests.support.net import free_port, wait_port

pytestmark = [pytest.mark.spark, pytest.mark.slow,
              pytest.mark.skipif(not java_available(), reason="Spark needs Java 17")]

ROOT = Path(__file__).resolve().parents[2]

JOB = r"""
import sys
from curation.config import DedupConfig, SparkConfig
from curation.schemas import DOCUMENTS, PAIRS, spark_ddl
from curation.spark import get_spark
from pipelines.spark_dedup import run_dedup
inp, runs = sys.argv[1], sys.argv[2:]
for master, out in zip(runs[::2], runs[1::2]):  # one fresh SparkContext per master, one after the other
    spark = get_spark(SparkConfig(master=master, shuffle_partitions=4, show_progress=False,
                                  conf={"spark.executor.memory": "1g", "spark.cores.max": "1"}))
    assert spark.sparkContext.master == master
    docs = spark.read.schema(spark_ddl(DOCUMENTS)).parquet(inp + "/documents")
    pairs = spark.read.schema(spark_ddl(PAIRS)).parquet(inp + "/pairs")
    res = run_dedup(spark, docs, pairs, DedupConfig())
    res.documents.write.parquet(out + "/documents")
    res.pairs.write.parquet(out + "/pairs")
    res.rejects.write.parquet(out + "/rejects")
    spark.stop()
"""


def _corpus(n_groups: int = 40):
    """Documents with URL, exact, near, paragraph and image duplicates (deterministic)."""
    rng = random.Random(5)
    vocab = [letter_word(i) for i in range(3000)]
    docs = []
    for g in range(n_groups):
        words = [rng.choice(vocab) for _ in range(150)]
        for v in range(rng.randint(1, 4)):  # v = 0..3
            w = list(words)
            for _ in range((0, 2, 1, 8)[v]):  # one replaced word: J ~0.94 (near dup); eight: J ~0.6 (not)
                w[rng.randrange(len(w))] = "edit"
            # variants 0 and 1 share a page URL (1 with a trailing slash); 2 and 3 are copies elsewhere
            url = f"http://site{g % 7}.com/page{g}" + ("/" if v == 1 else f"-{v}" if v > 1 else "")
            imgs = [f"http://img/{g}.jpg", "http://img/common.gif" if g % 2 else f"http://img/{g}b.jpg"]
            texts = [" ".join(w), f"footer of site{g % 7}"]
            meta = [None, None] + [{"src": u} for u in imgs]
            docs.append(dict(doc_id=f"g{g:03d}v{v}", url=url, texts=texts + [None, None], images=[None, None] + imgs,
                             metadata=json.dumps(meta), general_metadata=json.dumps(
                                 {"url": url, "warc_date": f"2024-01-0{v + 1}T00:00:00Z", "warc_filename": "f"}),
                             lang="en", lang_score=0.5))
    pairs = [dict(key=f"{d['doc_id']}#{i}", url=u, caption="c", caption_source="alt", page_url=d["url"],
                  doc_id=d["doc_id"]) for d in docs for i, u in enumerate(d["images"]) if u]
    return docs, pairs


def _read(out: Path):
    res = {}
    for name, key in (("documents", "doc_id"), ("pairs", "key"), ("rejects", "row_id")):
        rows = pq.read_table(out / name).to_pylist()
        res[name] = sorted(rows, key=lambda r: (r.get("table", ""), r[key]))
    return res


def _job(inp: Path, runs: dict[str, Path], env) -> None:
    args = [str(x) for master, out in runs.items() for x in (master, out)]
    proc = subprocess.run([sys.executable, "-c", JOB, str(inp), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_same_result_local1_local2_standalone(tmp_path):
    import pyspark

    docs, pairs = _corpus()
    inp = tmp_path / "in"
    (inp / "documents").mkdir(parents=True)
    (inp / "pairs").mkdir()
    pq.write_table(pa.Table.from_pylist(docs, schema=DOCUMENTS), inp / "documents" / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(pairs, schema=PAIRS), inp / "pairs" / "part-0.parquet")
    env = dict(os.environ, PYTHONPATH=str(ROOT), SPARK_LOG_LEVEL="ERROR", PYSPARK_PYTHON=sys.executable)

    spark_home = Path(pyspark.__file__).parent
    spark_class = spark_home / "bin" / "spark-class"
    port, ui, wport, wui = free_port(), free_port(), free_port(), free_port()
    cenv = dict(env, SPARK_HOME=str(spark_home), SPARK_LOCAL_IP="127.0.0.1", SPARK_WORKER_DIR=str(tmp_path / "work"))
    runs = {"local[1]": tmp_path / "local1", "local[2]": tmp_path / "local2",
            f"spark://127.0.0.1:{port}": tmp_path / "cluster"}
    master = worker = None
    try:
        master = subprocess.Popen([str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                   "--port", str(port), "--webui-port", str(ui)], env=cenv,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, master)
        worker = subprocess.Popen([str(spark_class), "org.apache.spark.deploy.worker.Worker",
                                   f"spark://127.0.0.1:{port}", "--host", "127.0.0.1", "--port", str(wport),
                                   "--webui-port", str(wui), "--cores", "1", "--memory", "1g"], env=cenv,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(wport, worker)
        _job(inp, runs, env)
    finally:
        for proc in (worker, master):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    results = {m: _read(out) for m, out in runs.items()}
    results["cluster"] = results.pop(f"spark://127.0.0.1:{port}")

    ref = results["local[1]"]
    assert ref["rejects"] and ref["documents"]
    reasons = {r["reason"] for r in ref["rejects"]}
    assert {"url_duplicate", "near_duplicate", "doc_removed", "image_too_common"} <= reasons, reasons
    assert results["local[2]"] == ref
    assert results["cluster"] == ref
