"""``curate``: the command line of the pipeline (also ``python -m curation``).

Subcommands map one-to-one to stages (``extract``, ``dedup``, ...), plus ``run``
for all of them in order, ``sample`` to write the offline mini-crawl and
``status`` to see which stages of a run directory are complete. Every
subcommand accepts ``--config FILE`` and repeated ``--set key=value``; the
configuration is validated before any work starts.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from curation import registry
from curation.config import PipelineConfig, parse_override
from curation.errors import CurateError

log = logging.getLogger("curation")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (see docs/architecture.md)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set dedup.num_bands=20 (repeatable)")
    p.add_argument("--master", help="Spark master (default local[*]; spark://host:7077 for a cluster)")
    p.add_argument("--scheduler", help="Dask scheduler address (default: a LocalCluster)")
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help="redo STAGE even if complete ('*' for all; repeatable)")
    p.add_argument("-v", "--verbose", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run every stage in order (resumable)")
    run.add_argument("--snapshot", help="CC-MAIN-YYYY-WW or 'sample' (default)")
    run.add_argument("--input", help="WARC directory, glob, listing file or WARC file instead of a snapshot")
    run.add_argument("--limit", type=int, help="only the first N WARC files")
    run.add_argument("--cc-base", help="Common Crawl base: https://data.commoncrawl.org/, s3://commoncrawl/ or a mirror dir")
    run.add_argument("--out", help="run directory")
    _common(run)

    # One subcommand per registered stage (curation/registry.py), in run order.
    for spec in registry.STAGES:
        sp = sub.add_parser(spec.name, help=spec.help)
        if spec.reads_source:
            sp.add_argument("--input", required=True, help="snapshot id, 'sample', WARC dir, glob, listing or file")
            sp.add_argument("--limit", type=int, help="only the first N WARC files")
            sp.add_argument("--cc-base", help="Common Crawl base (as for curate run)")
        else:
            sp.add_argument("--input", required=True,
                            help=f"run directory holding {', '.join(u + '/' for u in spec.upstream())} (or one of those stage dirs)")
        sp.add_argument("--out", required=True, help=f"run directory (writes OUT/{spec.name}/)")
        _common(sp)
        if spec.cli_arguments:
            registry.load_target(spec.cli_arguments)(sp)

    smp = sub.add_parser("sample", help="write the offline sample mini-crawl")
    smp.add_argument("--out", required=True)
    smp.add_argument("--pages", type=int, default=300)
    smp.add_argument("--seed", type=int, default=0)
    smp.add_argument("-v", "--verbose", action="store_true")

    rep = sub.add_parser("report", help="quality report of a run directory: one HTML page + metrics JSON (Spark SQL)")
    rep.add_argument("--input", required=True, help="run directory")
    rep.add_argument("--out", help="HTML file to write (default INPUT/report.html; the JSON goes beside it)")
    _common(rep)

    card = sub.add_parser("card", help="write INPUT/DATASET_CARD.md (curate run writes it at the end)")
    card.add_argument("--input", required=True, help="run directory")
    card.add_argument("--snapshot", help="snapshot the run curated (default from the config)")
    _common(card)

    for job in registry.JOBS:  # curate train / curate eval
        registry.load_target(job.cli_arguments)(sub)

    st = sub.add_parser("status", help="which stages of a run directory are complete")
    st.add_argument("--out", required=True)
    st.add_argument("-v", "--verbose", action="store_true")
    return parser


def load_config(args: argparse.Namespace) -> PipelineConfig:
    overrides = dict(parse_override(o) for o in getattr(args, "overrides", []))
    for attr, key in (("snapshot", "snapshot"), ("limit", "limit"), ("cc_base", "cc_base"), ("out", "out"),
                      ("master", "spark.master"), ("scheduler", "dask.scheduler")):
        value = getattr(args, attr, None)
        if value is not None and value != "":
            overrides[key] = value
    return PipelineConfig.load(getattr(args, "config", None), overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return _dispatch(args)
    except CurateError as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from curation import pipeline
    from curation.stage import read_marker

    if args.command == "sample":
        from curation.sample import generate_sample

        manifest = generate_sample(args.out, n_pages=args.pages, seed=args.seed)
        print(json.dumps({k: manifest[k] for k in manifest if k in ("n_pages", "counts", "image_base_url")}, indent=2))
        return 0
    if args.command == "status":
        for name in registry.stage_order():
            marker = read_marker(f"{args.out.rstrip('/')}/{name}")
            state = f"complete ({marker['finished_at']}, {marker['rows_out']} rows)" if marker else "not complete"
            print(f"{name:10s} {state}")
        return 0

    job = registry.job_for(args.command)
    if job is not None:
        return registry.load_target(job.cli_main)(args, load_config)
    cfg = load_config(args)
    from curation.preflight import preflight  # cluster reachable, inputs complete, --out writable: in seconds

    preflight(cfg, args.command, getattr(args, "input", None))
    force = set(args.force)
    if args.command == "report":
        from curation.report import write_report

        run_root = args.input.rstrip("/")
        out = args.out or f"{run_root}/report.html"
        write_report(run_root, out, cfg)  # a ReportError is a CurateError: one line, exit 2
        print(f"report: {out}")
        return 0
    if args.command == "card":
        from curation.card import write_card

        cfg.out = args.input.rstrip("/")
        print(f"dataset card: {write_card(cfg.out, cfg)}")
        return 0
    if args.command == "run":
        results = pipeline.run_all(cfg, args.input, force)
        _print_summary(cfg.out, results)
        return 0
    if args.command in registry.stage_order():
        return _run_one_stage(args, cfg, force)
    raise AssertionError(f"unhandled command {args.command}")


def _run_one_stage(args: argparse.Namespace, cfg: PipelineConfig, force: set[str]) -> int:
    """``curate <stage> --input ... --out ...``: one registered stage on one run directory."""
    from curation import pipeline
    from curation.stage import StageRunner

    spec = registry.spec(args.command)
    source = None
    if spec.reads_source:
        # --input names the raw input: 'sample', a snapshot id, or WARC files.
        if args.input == "sample" or args.input.startswith("CC-MAIN-"):
            cfg.snapshot = args.input
            source = pipeline.prepare_inputs(cfg)
        else:
            source = pipeline.prepare_inputs(cfg, args.input)
        source_root = cfg.out
    else:
        source_root = registry.source_root(args.input)
    if spec.cli_main:
        taken_over = registry.load_target(spec.cli_main)(args, cfg, source_root)
        if taken_over is not None:
            return taken_over
    if not spec.when(cfg):
        print(f"stage {args.command} does not apply to this configuration; nothing to do")
        return 0
    stats = pipeline.run_stage(StageRunner(cfg.out, cfg, force), args.command, source_root, source)
    _print_summary(cfg.out, {args.command: stats})
    return 0


def _print_summary(out: str, results: dict) -> None:
    print(f"\nrun directory: {Path(out).resolve() if '://' not in out else out}")
    for name, st in results.items():
        rej = ", ".join(f"{k}={v}" for k, v in sorted(st.rejected.items(), key=lambda kv: -kv[1]))
        outs = ", ".join(f"{k}={v}" for k, v in st.outputs.items())
        print(f"  {name:8s} in={st.rows_in} out={st.rows_out} [{outs}] rejected={st.rejected_total} ({rej}) {st.seconds:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
