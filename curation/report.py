"""``curate report``: the quality report of one run directory, as JSON and one HTML page.

A person decides whether a curated dataset is fit to train on by looking at it: how
many rows each stage kept and why it dropped the others, how scores, lengths, sizes
and languages are distributed, and what pairs at the top, middle and bottom of a
score look like. This module gathers those numbers; :mod:`curation.report_plots`
draws them and :mod:`curation.report_html` lays them out as one self-contained page.

Where the numbers come from:

- the funnel: every stage's ``stats.json`` (rows in, out, rejected per reason, and each
  secondary table), in :func:`curation.registry.stage_order` order, then any other stage
  directory of the run that holds a ``stats.json``;
- every other metric: one Spark SQL file ``sql/report_<metric>.sql``, whose header says
  what it needs, e.g. ``-- needs: pairs(clip_score)``: the metric runs over the output
  ``pairs/`` of a *complete* stage whose Parquet holds a ``clip_score`` column (the
  latest such stage, or the first with ``-- pick: first``), and is skipped, with the
  reason recorded, when no stage has one. ``rejects`` means the union of every stage's
  ``rejects/``. So a new stage, or a new column in ``curation/schemas.py``, shows up in
  the report without any change here: add a SQL file for a new metric.

SQL header keys (``-- key: value`` lines before the query; other comment lines are the
metric's description): ``title``; ``kind`` (``numeric``: the query yields ``value`` and
optionally ``series``, drawn as a histogram with quantiles; ``categorical``: a
``category`` column, drawn as counts; ``table``: the rows themselves; ``samples``:
``band, key, caption, caption_source, image, score`` rows shown as an image grid);
``needs`` (``[alias=]output(col, ...)``, alternatives separated by ``|``; several
``needs`` lines for several tables); ``pick`` (``last``/``first``); ``scale``
(``linear``/``log``); ``bins`` (``auto``/``integer``). Files named ``report__*.sql``
are shared building blocks (histogram, summary, counts), not metrics.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fsspec.core import url_to_fs

from curation.config import PipelineConfig, ReportConfig
from curation.registry import stage_order
from curation.schemas import REJECTS
from curation.sql import SQL_DIR, load_sql
from curation.stage import MARKER, REJECTS_DIR, STATS
from curation.errors import ReportError

log = logging.getLogger(__name__)

METRIC_PREFIX = "report_"
BLOCK_PREFIX = "report__"
KINDS = ("numeric", "categorical", "table", "samples")
MAX_TABLE_ROWS = 500


# --------------------------------------------------------------------------- metric files
@dataclass(frozen=True)
class Need:
    """One table a metric reads: ``alias`` in the SQL, satisfied by the first alternative found."""

    alias: str
    alternatives: tuple[tuple[str, tuple[str, ...]], ...]  # (output name, required columns)

    def describe(self) -> str:
        return " or ".join(f"{out}({', '.join(cols)})" for out, cols in self.alternatives)


@dataclass
class MetricSpec:
    name: str
    title: str
    kind: str
    needs: list[Need]
    pick: str = "last"
    scale: str = "linear"
    bins: str = "auto"
    description: str = ""

    @property
    def sql_name(self) -> str:
        return METRIC_PREFIX + self.name


_NEED_RE = re.compile(r"^\s*(?:(\w+)\s*=\s*)?(\w+)\s*(?:\(([^)]*)\))?\s*$")


def _parse_need(text: str, where: str) -> Need:
    alias = None
    alts = []
    for part in text.split("|"):
        m = _NEED_RE.match(part)
        if not m:
            raise ReportError(f"{where}: cannot read needs entry {part.strip()!r}; expected [alias=]output(col, ...)")
        a, output, cols = m.groups()
        if alias is not None and (a or output) != alias:
            raise ReportError(f"{where}: alternatives of one need must share one alias ({text!r})")
        alias = a or output
        alts.append((output, tuple(c.strip() for c in (cols or "").split(",") if c.strip())))
    return Need(alias, tuple(alts))


def parse_metric(name: str, text: str) -> MetricSpec:
    """Read the ``-- key: value`` header of ``sql/report_<name>.sql``."""
    where = f"sql/{METRIC_PREFIX}{name}.sql"
    keys: dict[str, str] = {}
    needs: list[Need] = []
    about: list[str] = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if not s.startswith("--"):
            break
        body = s[2:].strip()
        m = re.match(r"^(title|kind|needs|pick|scale|bins):\s*(.*)$", body)
        if not m:
            about.append(body)
        elif m.group(1) == "needs":
            needs.append(_parse_need(m.group(2), where))
        else:
            keys[m.group(1)] = m.group(2).strip()
    spec = MetricSpec(
        name=name, title=keys.get("title", name.replace("_", " ")), kind=keys.get("kind", ""),
        needs=needs, pick=keys.get("pick", "last"), scale=keys.get("scale", "linear"),
        bins=keys.get("bins", "auto"), description=" ".join(about),
    )
    if spec.kind not in KINDS:
        raise ReportError(f"{where}: kind must be one of {', '.join(KINDS)}, got {spec.kind!r}")
    if not needs:
        raise ReportError(f"{where}: no '-- needs:' line says which table it reads")
    if spec.pick not in ("last", "first") or spec.scale not in ("linear", "log") or spec.bins not in ("auto", "integer"):
        raise ReportError(f"{where}: pick must be last|first, scale linear|log, bins auto|integer")
    return spec


def load_metric_specs() -> list[MetricSpec]:
    """Every metric in ``sql/report_*.sql`` (building blocks ``report__*`` excluded), by name."""
    specs = []
    for path in sorted(SQL_DIR.glob(f"{METRIC_PREFIX}*.sql")):
        if path.name.startswith(BLOCK_PREFIX):
            continue
        specs.append(parse_metric(path.stem[len(METRIC_PREFIX):], path.read_text()))
    return specs


# --------------------------------------------------------------------------- the run directory
@dataclass
class TableRef:
    """One Parquet output of a stage: ``<run>/<stage>/<output>/``."""

    stage: str
    output: str
    path: str
    columns: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.stage}/{self.output}"


@dataclass
class StageInfo:
    name: str
    complete: bool
    stats: dict[str, Any] | None = None
    marker: dict[str, Any] | None = None


@dataclass
class RunCatalog:
    """The stages of a run directory (registry order first) and their Parquet outputs.

    Only complete stages (those with a completion marker) contribute tables: a partial
    stage's files are not a result.
    """

    root: str
    stages: list[StageInfo] = field(default_factory=list)
    tables: list[TableRef] = field(default_factory=list)

    @classmethod
    def scan(cls, root: str) -> "RunCatalog":
        fs, base = url_to_fs(root)
        if not fs.isdir(base):
            raise ReportError(f"run directory not found: {root}")
        proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        prefix = "" if proto in ("file", "local") else f"{proto}://"
        present = sorted(
            p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False) if fs.isdir(p)
        )
        registry = list(stage_order())
        # Stage directories the registry does not name (e.g. written by a newer version) follow,
        # in the order they finished.
        others = sorted(
            (d for d in present if d not in registry and not d.startswith(("_", "."))
             and fs.exists(f"{base}/{d}/{STATS}")),
            key=lambda d: (_finished_at(fs, f"{base}/{d}"), d),
        )
        cat = cls(root=root.rstrip("/"))
        for name in registry + others:
            sdir = f"{base}/{name}"
            if not fs.isdir(sdir):
                cat.stages.append(StageInfo(name, complete=False))
                continue
            complete = fs.exists(f"{sdir}/{MARKER}")
            info = StageInfo(name, complete)
            if complete:
                info.marker = json.loads(fs.cat_file(f"{sdir}/{MARKER}"))
                if fs.exists(f"{sdir}/{STATS}"):
                    info.stats = json.loads(fs.cat_file(f"{sdir}/{STATS}"))
                for sub in sorted(fs.ls(sdir, detail=False)):
                    cols = _parquet_columns(fs, sub)
                    if cols is not None:
                        output = sub.rstrip("/").rsplit("/", 1)[-1]
                        cat.tables.append(TableRef(name, output, prefix + sub, cols))
            cat.stages.append(info)
        return cat

    def resolve(self, need: Need, pick: str) -> list[TableRef]:
        """The table(s) that satisfy ``need``: every stage's rejects, or one stage's output."""
        for output, cols in need.alternatives:
            found = [t for t in self.tables if t.output == output and set(cols) <= set(t.columns)]
            if not found:
                continue
            if output == REJECTS_DIR:
                return found
            return [found[-1] if pick == "last" else found[0]]
        return []


def _finished_at(fs, stage_dir: str) -> str:
    try:
        return json.loads(fs.cat_file(f"{stage_dir}/{MARKER}")).get("finished_at") or ""
    except (FileNotFoundError, ValueError):
        return ""


def _parquet_columns(fs, path: str) -> tuple[str, ...] | None:
    """Column names of the Parquet dataset at ``path`` (None if it is not one)."""
    import pyarrow.parquet as pq

    if not fs.isdir(path):
        return None
    files = sorted(p for p in fs.find(path) if p.endswith(".parquet") and "/_" not in p[len(path):] and "/." not in p[len(path):])
    if not files:
        return None
    with fs.open(files[0], "rb") as fh:
        return tuple(pq.read_schema(fh).names)


# --------------------------------------------------------------------------- running the metrics
def _view_name(ref: TableRef) -> str:
    return "vlc_" + re.sub(r"\W", "_", f"{ref.stage}__{ref.output}")


def _register(spark, refs: list[TableRef], alias: str) -> str:
    """A temp view over one table, or the union of several (rejects) on their shared columns."""
    if len(refs) == 1:
        name = _view_name(refs[0])
        spark.read.parquet(refs[0].path).createOrReplaceTempView(name)
        return name
    common = [c for c in REJECTS.names if all(c in r.columns for r in refs)] if alias == REJECTS_DIR else \
        [c for c in refs[0].columns if all(c in r.columns for r in refs)]
    df = None
    for r in refs:
        part = spark.read.parquet(r.path).select(*common)
        df = part if df is None else df.unionByName(part)
    name = f"vlc_all_{alias}"
    df.createOrReplaceTempView(name)
    return name


def _numeric(spark, spec: MetricSpec, df, cfg: ReportConfig) -> dict[str, Any]:
    from pyspark.sql import functions as F

    if "value" not in df.columns:
        raise ReportError(f"sql/{spec.sql_name}.sql must select a column named value")
    if "series" not in df.columns:
        df = df.withColumn("series", F.lit("all"))
    df = df.select(F.col("value"), F.col("series").cast("string").alias("series"))
    df.createOrReplaceTempView("vlc_metric_values")
    summary: dict[str, Any] = {}
    for row in spark.sql(load_sql("report__summary", values="vlc_metric_values")).collect():
        key = "all" if row["series"] is None else row["series"]
        q = row["quantiles"] or [None] * 5
        summary[key] = {"n": row["n"], "min": row["min"], "max": row["max"], "mean": row["mean"], "std": row["std"],
                        "p05": q[0], "p25": q[1], "p50": q[2], "p75": q[3], "p95": q[4]}
    result: dict[str, Any] = {"summary": summary, "scale": spec.scale}
    if not summary.get("all", {}).get("n"):
        result["empty"] = True
        return result
    if spec.bins == "integer":
        counts: dict[str, dict[int, int]] = {}
        for row in spark.sql(load_sql("report__integer_counts", values="vlc_metric_values")).collect():
            counts.setdefault(row["series"], {})[int(row["k"])] = int(row["n"])
        result["integer_counts"] = {s: sorted(c.items()) for s, c in counts.items()}
        return result
    log_scale = spec.scale == "log"
    transform = "log10(1D + CAST(value AS DOUBLE))" if log_scale else "CAST(value AS DOUBLE)"
    where = "AND CAST(value AS DOUBLE) >= 0" if log_scale else ""
    rows = spark.sql(load_sql("report__histogram", values="vlc_metric_values", bins=cfg.histogram_bins,
                              transform=transform, where=where)).collect()
    bins = cfg.histogram_bins
    lo, width = rows[0]["lo"], rows[0]["width"]
    edges = [lo + i * width for i in range(bins + 1)]
    if log_scale:
        edges = [10 ** e - 1 for e in edges]
    hist: dict[str, list[int]] = {}
    for row in rows:
        hist.setdefault(row["series"], [0] * bins)[row["bin"]] = int(row["n"])
    result["histogram"] = {"edges": edges, "counts": hist}
    return result


def _categorical(spark, spec: MetricSpec, df, cfg: ReportConfig) -> dict[str, Any]:
    if "category" not in df.columns:
        raise ReportError(f"sql/{spec.sql_name}.sql must select a column named category")
    df.createOrReplaceTempView("vlc_metric_values")
    rows = [(r["category"], int(r["n"])) for r in spark.sql(load_sql("report__categories", values="vlc_metric_values")).collect()]
    top = rows[: cfg.max_categories]
    rest = sum(n for _, n in rows[cfg.max_categories:])
    if rest:
        top.append(("other", rest))
    return {"counts": top, "total": sum(n for _, n in rows), "distinct": len(rows), "empty": not rows}


def _table(df) -> dict[str, Any]:
    rows = df.limit(MAX_TABLE_ROWS + 1).collect()
    return {"columns": df.columns, "rows": [list(r) for r in rows[:MAX_TABLE_ROWS]],
            "truncated": len(rows) > MAX_TABLE_ROWS, "empty": not rows}


def _samples(df) -> dict[str, Any]:
    needed = {"band", "key", "caption", "image", "score"}
    if not needed <= set(df.columns):
        raise ReportError(f"a samples query must select {', '.join(sorted(needed))}")
    out = []
    for r in df.collect():
        d = r.asDict()
        out.append({"band": d["band"], "key": d["key"], "caption": d["caption"],
                    "caption_source": d.get("caption_source"), "score": d["score"], "image": d["image"]})
    return {"samples": out, "empty": not out}


def run_metric(spark, spec: MetricSpec, catalog: RunCatalog, cfg: ReportConfig) -> dict[str, Any]:
    """Run one metric; ``status`` is ok, skipped (no input table) or error (the message)."""
    base = {"title": spec.title, "kind": spec.kind, "description": spec.description.replace("{k}", str(cfg.samples_per_band))}
    bindings: dict[str, str] = {}
    sources: dict[str, list[str]] = {}
    for need in spec.needs:
        refs = catalog.resolve(need, spec.pick)
        if not refs:
            return {**base, "status": "skipped", "reason": f"no complete stage output has {need.describe()}"}
        sources[need.alias] = [r.label for r in refs]
        bindings[need.alias] = _register(spark, refs, need.alias)
    try:
        df = spark.sql(load_sql(spec.sql_name, k=cfg.samples_per_band, **bindings))
        if spec.kind == "numeric":
            result = _numeric(spark, spec, df, cfg)
        elif spec.kind == "categorical":
            result = _categorical(spark, spec, df, cfg)
        elif spec.kind == "table":
            result = _table(df)
        else:
            result = _samples(df)
    except ReportError:
        raise
    except Exception as exc:  # a broken query must not hide the rest of the report
        msg = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
        log.error("report metric %s failed: %s", spec.name, msg)
        return {**base, "status": "error", "sources": sources, "reason": msg}
    return {**base, "status": "ok", "sources": sources, **result}


# --------------------------------------------------------------------------- the funnel
# Counters of the safety layer (docs/safety.md) that are not rejections: personal data replaced in place,
# robots.txt hosts asked, images with a face. They go beside the reasons so the funnel shows every
# safety decision, not only the ones that dropped a row.
SAFETY_COUNTERS = ("pii_email", "pii_phone", "pii_ip", "robots_txt_fetched", "images_with_faces")
# Rejection reasons that are safety decisions (the names the stages write; the card's Safety section sums them).
SAFETY_REASONS = ("blocked_domain", "hash_listed", "robots_disallowed", "tdm_reserved", "robots_noai", "opted_out",
                  "nsfw", "low_aesthetic", "takedown")


def safety_counters(stats: dict[str, Any]) -> dict[str, int]:
    """A stage's safety counters, plus ``takedown_entries``: rows/entries ``curate takedown`` removed."""
    c = stats.get("counters") or {}
    out = {k: int(c[k]) for k in SAFETY_COUNTERS if isinstance(c.get(k), (int, float)) and c[k]}
    taken = sum(n for files in (c.get("takedown") or {}).values() if isinstance(files, dict) for n in files.values())
    if taken:
        out["takedown_entries"] = taken
    return out


def funnel(catalog: RunCatalog) -> list[dict[str, Any]]:
    """One row per stage table (main, then each secondary table): in, out, rejected by reason; the main
    row also carries the stage's :func:`safety_counters`."""
    rows = []
    for st in catalog.stages:
        if not st.complete or not st.stats:
            rows.append({"stage": st.name, "table": None, "complete": st.complete})
            continue
        s = st.stats
        rows.append({"stage": st.name, "table": None, "complete": True, "rows_in": s.get("rows_in", 0),
                     "rows_out": s.get("rows_out", 0), "rejected": dict(s.get("rejected", {})),
                     "outputs": dict(s.get("outputs", {})), "seconds": s.get("seconds"), "safety": safety_counters(s)})
        for tname, t in sorted((s.get("tables") or {}).items()):
            rows.append({"stage": st.name, "table": tname, "complete": True, "rows_in": t.get("rows_in", 0),
                         "rows_out": t.get("rows_out", 0), "rejected": dict(t.get("rejected", {}))})
    return rows


# --------------------------------------------------------------------------- entry point
_CC_PATH_RE = re.compile(r"crawl-data/(CC-MAIN-\d{4}-\d{2})/")


def run_snapshot(catalog: RunCatalog, configured: str) -> str:
    """The snapshot a run curated: from its WARC paths (``crawl-data/<id>/...``) when they say, else the config's."""
    extract = next((s for s in catalog.stages if s.name == "extract" and s.marker), None)
    m = _CC_PATH_RE.search((extract.marker.get("inputs", {}).get("warcs") or "") if extract else "")
    return m.group(1) if m else configured


def build_report(spark, run_root: str, cfg: PipelineConfig) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict (samples still carry image bytes)."""
    catalog = RunCatalog.scan(run_root)
    if not any(st.complete for st in catalog.stages):
        raise ReportError(f"{run_root} holds no complete stage (no {MARKER} in any stage directory)")
    metrics = {}
    for spec in load_metric_specs():
        log.info("report: metric %s", spec.name)
        metrics[spec.name] = run_metric(spark, spec, catalog, cfg.report)
    extract = next((s for s in catalog.stages if s.name == "extract" and s.marker), None)
    warcs = (extract.marker.get("inputs", {}).get("warcs") or "") if extract else ""
    return {
        "run": catalog.root,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "snapshot": run_snapshot(catalog, cfg.snapshot),
        "warc_files": len([w for w in warcs.split(",") if w]),
        "stages": [{"name": s.name, "complete": s.complete, "finished_at": (s.marker or {}).get("finished_at"),
                    "run_id": (s.marker or {}).get("run_id")} for s in catalog.stages],
        "tables": [{"stage": t.stage, "output": t.output, "columns": list(t.columns)} for t in catalog.tables],
        "funnel": funnel(catalog),
        "metrics": metrics,
    }


def report_json(report: dict[str, Any]) -> str:
    """The report as strict JSON: no image bytes (the HTML embeds the thumbnails), NaN as null."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if not isinstance(v, (bytes, bytearray))}
        if isinstance(obj, (list, tuple)):
            return [strip(v) for v in obj]
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        return obj

    return json.dumps(strip(report), indent=2, default=str, allow_nan=False)


def json_path_for(html_path: str) -> str:
    """``report.html`` -> ``report.json`` beside it."""
    return (html_path[:-5] if html_path.endswith(".html") else html_path) + ".json"


def write_report(run_root: str, out_html: str, cfg: PipelineConfig, spark=None) -> dict[str, Any]:
    """Build the report of ``run_root``, write ``out_html`` and the metrics JSON beside it."""
    import fsspec

    from curation.report_html import render_html
    from curation.spark import get_spark

    spark = spark or get_spark(cfg.spark)
    report = build_report(spark, run_root, cfg)
    page = render_html(report, cfg.report)
    with fsspec.open(json_path_for(out_html), "w") as fh:
        fh.write(report_json(report))
    with fsspec.open(out_html, "w", encoding="utf-8") as fh:
        fh.write(page)
    log.info("report: wrote %s and %s", out_html, json_path_for(out_html))
    return report
