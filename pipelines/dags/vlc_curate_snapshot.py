"""Airflow DAG ``vlc_curate_snapshot``: curate one Common Crawl snapshot, one task per stage.

Every task runs the same CLI a person runs (``curate <stage> --input RUN --out RUN``;
extract: ``curate extract --input <snapshot|sample> --out RUN``), so a DAG run and
``make curate`` produce the same run directory, and a failed task is retried or
cleared and resumes from the stages' completion markers. After the last stage,
``curate report`` writes ``RUN/report.html`` (+ JSON) and ``curate card`` writes
``RUN/DATASET_CARD.md``, which marks the snapshot as curated for the watch DAG.

Params (trigger with a conf to override): ``snapshot`` (``CC-MAIN-YYYY-WW`` or
``sample``), ``limit`` (first N WARC files), ``output`` (the run directory; default
``<output_root>/<snapshot>``), ``cc_base``, ``spark_master`` (e.g.
``spark://head:7077``; empty: embedded ``local[*]``), ``dask_scheduler`` (e.g.
``tcp://head:8786``; empty: a LocalCluster per stage), ``config`` (a YAML file),
``dedup_state_dir`` (``dedup.state_dir``: the cross-snapshot dedup state, the same for every
snapshot; empty: none) and ``overrides`` (``key=value`` strings, each passed as ``--set``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param

sys.path.insert(0, str(Path(__file__).resolve().parent))  # vlc_common beside this file, however Airflow loads it
from vlc_common import (
    CURATE, CURATE_DAG_ID, DEDUP_STATE_DIR, DEFAULT_ARGS, JINJA_FILTERS, OUTPUT_ROOT, REPO, TIMEOUTS, stage_names,
)

RUN = "{{ (params.output or (params.output_root ~ '/' ~ params.snapshot)) | sh }}"
# Flags every subcommand takes. ``--set snapshot=`` tells each stage which snapshot the run is
# (a stage's defaults may depend on it, e.g. the offline sample's tiny models).
COMMON = (
    "--set snapshot={{ params.snapshot | sh }}"
    "{% if params.config %} --config {{ params.config | sh }}{% endif %}"
    "{% if params.spark_master %} --master {{ params.spark_master | sh }}{% endif %}"
    "{% if params.dask_scheduler %} --scheduler {{ params.dask_scheduler | sh }}{% endif %}"
    "{% if params.dedup_state_dir %} --set dedup.state_dir={{ params.dedup_state_dir | sh }}{% endif %}"
    "{% for o in params.overrides %} --set {{ o | sh }}{% endfor %}"
)
EXTRACT = (
    f"{CURATE} extract --input {{{{ params.snapshot | sh }}}} --out {RUN} {COMMON}"
    "{% if params.limit %} --limit {{ params.limit | int }}{% endif %}"
    "{% if params.cc_base %} --cc-base {{ params.cc_base | sh }}{% endif %}"
)


def stage_command(name: str) -> str:
    if name == "extract":
        return EXTRACT
    return f"{CURATE} {name} --input {RUN} --out {RUN} {COMMON}"


with DAG(
    dag_id=CURATE_DAG_ID,
    description="Curate one Common Crawl snapshot (or the offline sample): every stage, then report and card",
    schedule=None,  # triggered by vlc_cc_snapshot_watch or by hand
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    user_defined_filters=JINJA_FILTERS,
    tags=["vl-curation"],
    params={
        "snapshot": Param("sample", type="string", pattern=r"^(sample|CC-MAIN-\d{4}-\d{2})$",
                          description="CC-MAIN-YYYY-WW, or 'sample' for the offline mini-crawl"),
        "limit": Param(None, type=["null", "integer"], minimum=1, description="only the first N WARC files"),
        "output": Param("", type="string", description="run directory (default <output_root>/<snapshot>)"),
        "output_root": Param(OUTPUT_ROOT, type="string", description="where runs live"),
        "cc_base": Param("", type="string", description="https://data.commoncrawl.org/, s3://commoncrawl/ or a mirror"),
        "spark_master": Param("", type="string", description="spark://host:7077 (empty: embedded local[*])"),
        "dask_scheduler": Param("", type="string", description="tcp://host:8786 (empty: a LocalCluster)"),
        "config": Param("", type="string", description="YAML config file"),
        "dedup_state_dir": Param(DEDUP_STATE_DIR, type="string",
                                 description="cross-snapshot dedup state shared by every snapshot (empty: none)"),
        "overrides": Param([], type="array", items={"type": "string", "pattern": r"^[A-Za-z_][\w.]*="},
                           description="key=value config overrides, each passed as --set"),
    },
) as dag:
    previous = None
    for name in stage_names():
        task = BashOperator(
            task_id=name,
            bash_command=stage_command(name),
            cwd=str(REPO),
            env={"PYTHONUNBUFFERED": "1"},
            append_env=True,
            execution_timeout=TIMEOUTS.get(name, DEFAULT_ARGS["execution_timeout"]),
            doc_md=f"`curate {name}`: see docs/architecture.md",
        )
        if previous is not None:
            previous >> task
        previous = task
    report = BashOperator(
        task_id="report", bash_command=f"{CURATE} report --input {RUN} {COMMON}", cwd=str(REPO),
        append_env=True, execution_timeout=TIMEOUTS["report"],
    )
    card = BashOperator(
        task_id="card", bash_command=f"{CURATE} card --input {RUN} {COMMON}", cwd=str(REPO),
        append_env=True, execution_timeout=TIMEOUTS["card"],
    )
    previous >> report >> card
