"""Benchmark: the images stage after the fetch, Spark (today) against the single-process stage (commit 62bd2a3).

Issue 13 asks that ``make curate`` be no slower after the images stage moved to Spark. The fetch
(refusals, img2dataset) is the same code both ways, so this bench fetches once and then times only
what differs, side by side in one process on the same fetch shards and the same dedup output:

* ``single_process``: the old stage's steps after ``run_img2dataset``, in this process: read the
  shards, sha256 and pHash duplicates (:func:`filters.image.exact_duplicates` /
  :func:`~filters.image.near_duplicates`), the Arrow pair and document joins, the Parquet writes and
  the WebDataset tars. Its functions are loaded from ``git show 62bd2a3:pipelines/images.py`` (the
  last commit with that stage), not copied; the few lines of its ``ImageStage.run`` that call them
  are repeated in :func:`single_process` below.
* ``spark``: :func:`pipelines.images_spark.images_after_fetch` on the run's session (started before
  the timing, its Python workers started by one small ``mapInArrow`` job first: the state extract
  and dedup leave the session in during ``curate run``).

Each contender runs ``--rounds`` times, alternating; CPU seconds are those of this process and every
descendant (the Spark JVM, its Python workers) from psutil, wall seconds from ``perf_counter``. The
load average is printed before and after (the machine is shared). The outputs of the two are
compared row for row (images, pairs, documents, rejects, WebDataset sample count).

Input: a run directory holding ``_sample/`` and ``dedup/`` (``documents/``, ``pairs/``) of a sample
run whose image URLs point at ``127.0.0.1:<--port>`` (the bench serves ``_sample/images`` there).

Usage: python bench/images_after_fetch.py --run DIR [--port 18473] [--rounds 3] [--commit 62bd2a3]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

OLD_COMMIT = "62bd2a3"  # the last commit whose images stage ran in one process


def load_old_stage(commit: str):
    """The single-process ``pipelines/images.py`` of ``commit`` as a module (it imports today's helpers,
    which kept their interfaces: filters.image, curation.layout, curation.wds_writer)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:pipelines/images.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"images_{commit}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"images_{commit}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its live descendants (JVM, Python workers)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me] + me.children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def single_process(old, docs, pairs, outcome, cfg, out: Path) -> dict:
    """The old stage after ``run_img2dataset`` (62bd2a3's ``fetch_and_filter`` tail and ``ImageStage.run``)."""
    import numpy as np
    import pyarrow as pa

    from curation.fetch import read_shards
    from curation.schemas import IMAGES
    from pipelines.images import fetched_with_bytes

    fcfg, icfg = cfg.image_filters, cfg.images
    rejected = dict(outcome.refused)
    to_fetch = outcome.to_fetch
    fetched, _ = read_shards(outcome.work_dir) if to_fetch else (None, {})
    kept = IMAGES.empty_table()
    if fetched is not None and fetched.num_rows:
        ok = fetched_with_bytes(fetched, to_fetch, rejected)  # unchanged since 62bd2a3
        kept = old._deduplicate(ok, fcfg, rejected, None)
    decided = set(rejected) | set(kept.column("url").to_pylist())
    for url in to_fetch:
        if url not in decided:
            rejected[url] = ("fetch_error:lost", "no result from img2dataset", None)

    rejects = [(url, "images", r, d, dup) for url, (r, d, dup) in sorted(rejected.items())]
    image_pairs, lost_pairs = old.join_pairs(pairs, kept)
    for key, url in zip(lost_pairs.column("key").to_pylist(), lost_pairs.column("url").to_pylist()):
        reason, detail, dup = rejected.get(url, ("no_image_url", "", None))
        rejects.append((key, "pairs", reason, f"image {url}: {detail}"[:500], dup))
    documents, n_images, _ = old.join_documents(docs, kept)
    if icfg.drop_documents_without_images and documents.num_rows:
        had = [sum(1 for u in (imgs or ()) if u is not None) for imgs in docs.column("images").to_pylist()]
        empty = np.array([n == 0 for n in n_images], dtype=bool)
        for doc_id, n_had in zip(documents.filter(pa.array(empty)).column("doc_id").to_pylist(),
                                 np.array(had)[empty].tolist()):
            rejects.append((doc_id, "documents", "no_images",
                            f"{n_had} image(s), none kept" if n_had else "no image in input", None))
        documents = documents.filter(pa.array(~empty))
    formats = dict(zip(kept.column("url").to_pylist(), kept.column("format").to_pylist()))
    old._write_parquet(kept, str(out / "images"))
    old._write_parquet(image_pairs, str(out / "pairs"))
    old._write_parquet(documents, str(out / "documents"))
    old._write_parquet(old._rejects(rejects), str(out / "rejects"))
    from curation.wds_writer import write_webdataset

    sizes = write_webdataset(image_pairs, [formats[u] for u in image_pairs.column("url").to_pylist()],
                             str(out / "webdataset"), icfg.samples_per_tar, icfg.webdataset_image_format)
    return {"kept": kept.num_rows, "pairs": image_pairs.num_rows, "documents": documents.num_rows,
            "webdataset": sum(sizes.values()),
            "rejected": dict(Counter(r[2] for r in rejects))}


def spark_path(spark, outcome, cfg, run: str, out: Path) -> dict:
    """Today's stage after the fetch (:func:`pipelines.images_spark.images_after_fetch`), as ``ImageStage.run`` calls it."""
    from curation.schemas import DOCUMENTS, PAIRS
    from pipelines.images_spark import images_after_fetch, read_fetched, read_table

    icfg = cfg.images
    docs = read_table(spark, f"{run}/dedup/documents", DOCUMENTS)
    pairs = read_table(spark, f"{run}/dedup/pairs", PAIRS)
    refused = spark.createDataFrame([(u, r, d, dup) for u, (r, d, dup) in sorted(outcome.refused.items())],
                                    "url string, reason string, detail string, duplicate_of string")
    to_fetch = spark.read.parquet(f"{outcome.work_dir}/urls.parquet").select("url")
    res = images_after_fetch(
        spark, fetched=read_fetched(spark, outcome.work_dir, outcome.shard_ids), to_fetch=to_fetch, refused=refused,
        docs=docs, pairs=pairs, outputs={k: str(out / k) for k in ("images", "pairs", "documents")},
        rejects_path=str(out / "rejects"), max_distance=cfg.image_filters.phash_max_hamming,
        drop_documents_without_images=icfg.drop_documents_without_images,
        webdataset={"dir": str(out / "webdataset"), "samples_per_tar": icfg.samples_per_tar,
                    "image_format": icfg.webdataset_image_format})
    rej = Counter(res.reasons)
    rej.update(res.pair_reasons)
    rej.update(res.doc_reasons)
    return {"kept": res.kept, "pairs": res.pairs_out, "documents": res.docs_out,
            "webdataset": sum(res.webdataset.values()), "rejected": dict(rej)}


def compare(a: Path, b: Path) -> dict[str, bool]:
    """Row-for-row equality of the two outputs (sorted by key; WebDataset: the number of samples)."""
    import pyarrow.dataset as ds

    def table(p: Path, sort):
        t = ds.dataset(str(p), format="parquet").to_table()
        return t.sort_by([(c, "ascending") for c in sort])

    out = {}
    for name, sort in (("images", ["url"]), ("pairs", ["key"]), ("documents", ["doc_id"]),
                       ("rejects", ["table", "row_id"])):
        ta, tb = table(a / name, sort), table(b / name, sort)
        tb = tb.select(ta.column_names)
        out[name] = ta.num_rows == tb.num_rows and all(
            ta.column(c).to_pylist() == tb.column(c).to_pylist() for c in ta.column_names)
    def samples(p: Path) -> int:
        return sum(json.loads((p / "webdataset" / "sizes.json").read_text()).values())

    out["webdataset_samples"] = samples(a) == samples(b)  # keys differ by design (docs/benchmarks.md)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="a run directory with _sample/ and dedup/")
    ap.add_argument("--port", type=int, default=18473, help="where the sample's image URLs point")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--commit", default=OLD_COMMIT, help="the single-process stage's commit")
    ap.add_argument("--contenders", default="single_process,spark")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (e.g. spark.master=local[2])")
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from curation.config import PipelineConfig
    from curation.schemas import DOCUMENTS, PAIRS
    from curation.spark import get_spark
    from filters.blocklists import takedown_filter
    from pipelines.images import make_policy, refuse_and_fetch, sample_image_server

    run = str(Path(args.run).resolve())
    overrides = {"snapshot": "sample", "out": run, "sample_image_port": args.port, "images.keep_fetch_cache": True}
    for kv in args.set:
        k, v = kv.split("=", 1)
        overrides[k] = v
    cfg = PipelineConfig.load(overrides=overrides)
    old = load_old_stage(args.commit)
    load_before = os.getloadavg()

    # Inputs, the fetch (untimed, once), the session and its Python workers (untimed).
    docs, pairs = old.read_dataset(f"{run}/dedup/documents", DOCUMENTS), old.read_dataset(f"{run}/dedup/pairs", PAIRS)
    urls = old.unique_image_urls(docs, pairs)
    t0 = time.perf_counter()
    with sample_image_server(cfg, run) as extra_allow:
        policy = make_policy(cfg.images, cfg.image_filters, extra_allow, cfg.safety.honour_tdm_reservation)
        outcome = refuse_and_fetch(urls, run, policy, cfg.image_filters, cfg.images, cfg.spark, None, None,
                                   [f for f in [takedown_filter(run)] if f is not None])
    fetch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    spark = get_spark(cfg.spark)
    spark.range(4).mapInArrow(lambda it: it, "id long").collect()
    session_s = time.perf_counter() - t0

    contenders = [c for c in args.contenders.split(",") if c]
    work = Path(run) / "_bench_after_fetch"
    shutil.rmtree(work, ignore_errors=True)
    wall: dict[str, list[float]] = {c: [] for c in contenders}
    cpu: dict[str, list[float]] = {c: [] for c in contenders}
    result: dict[str, dict] = {}
    jobs: list[int] = []  # Spark jobs the Spark path launched, per round
    for r in range(args.rounds):
        for name in (contenders if r % 2 == 0 else contenders[::-1]):
            out = work / f"{name}-{r}"
            c0, t0 = tree_cpu_seconds(), time.perf_counter()
            if name == "single_process":
                result[name] = single_process(old, docs, pairs, outcome, cfg, out)
            else:
                group = f"bench-images-after-fetch-{r}"
                spark.sparkContext.setJobGroup(group, "images_after_fetch")
                result[name] = spark_path(spark, outcome, cfg, run, out)
                jobs.append(len(spark.sparkContext.statusTracker().getJobIdsForGroup(group)))
                spark.sparkContext.setJobGroup("", "")
            wall[name].append(round(time.perf_counter() - t0, 2))
            cpu[name].append(round(tree_cpu_seconds() - c0, 2))
    last = args.rounds - 1
    same = compare(work / f"single_process-{last}", work / f"spark-{last}") if len(contenders) == 2 else {}
    med = {k: round(statistics.median(v), 2) for k, v in wall.items()}
    print(json.dumps({
        "bench": "images_after_fetch",
        "run": run,
        "urls": len(urls),
        "documents": docs.num_rows,
        "pairs": pairs.num_rows,
        "spark_master": cfg.spark.master,
        "fetch_seconds_untimed": round(fetch_s, 1),
        "session_start_seconds_untimed": round(session_s, 1),
        "wall_s": wall,
        "cpu_s": cpu,
        "median_wall_s": med,
        "median_cpu_s": {k: round(statistics.median(v), 2) for k, v in cpu.items()},
        "spark_over_single_process_wall": (round(med["spark"] / med["single_process"], 2)
                                           if {"spark", "single_process"} <= set(med) else None),
        "spark_jobs": jobs,
        "outcome": result,
        "outputs_equal": same,
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
    }, indent=1))


if __name__ == "__main__":
    main()
