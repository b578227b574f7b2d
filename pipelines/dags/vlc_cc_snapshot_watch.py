"""Airflow DAG ``vlc_cc_snapshot_watch``: find the newest Common Crawl snapshot not curated yet and curate it.

Daily (``VLC_WATCH_SCHEDULE`` to change), ``python -m curation.snapshot_watch`` (in the
project's environment) lists snapshots from Common Crawl's ``collinfo.json`` or the
``crawl-data/`` listing under ``cc_base`` and prints the newest of the ``lookback``
newest that has no ``<output_root>/<snapshot>/DATASET_CARD.md``. If there is one,
``vlc_curate_snapshot`` is triggered for it with run id ``cc__<snapshot>``: a snapshot
whose run is already under way (or failed: clear it in Airflow to resume) is not
triggered twice.
"""
from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param, task

sys.path.insert(0, str(Path(__file__).resolve().parent))  # vlc_common beside this file, however Airflow loads it
from vlc_common import (
    CURATE_DAG_ID, DEDUP_STATE_DIR, DEFAULT_ARGS, JINJA_FILTERS, OUTPUT_ROOT, PYTHON, REPO, WATCH_DAG_ID,
)

FOUND = "(ti.xcom_pull(task_ids='find_newest_uncurated') | fromjson)"

with DAG(
    dag_id=WATCH_DAG_ID,
    description="Trigger vlc_curate_snapshot for the newest Common Crawl snapshot not curated yet",
    schedule=os.environ.get("VLC_WATCH_SCHEDULE", "@daily"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 3},
    user_defined_filters={**JINJA_FILTERS, "fromjson": json.loads},
    render_template_as_native_obj=True,  # the trigger's conf keeps types (limit: null or an int)
    tags=["vl-curation"],
    params={
        "cc_base": Param("https://data.commoncrawl.org/", type="string",
                         description="Common Crawl base: https (uses collinfo.json), s3://commoncrawl/ or a mirror"),
        "collinfo": Param("", type="string", description="collinfo.json URL or file (empty: the default for an https base)"),
        "output_root": Param(OUTPUT_ROOT, type="string", description="where runs live: <output_root>/<snapshot>/"),
        "lookback": Param(1, type="integer", minimum=1, description="consider the N newest snapshots"),
        "limit": Param(None, type=["null", "integer"], minimum=1, description="passed on: only the first N WARC files"),
        "spark_master": Param("", type="string"),
        "dask_scheduler": Param("", type="string"),
        "config": Param("", type="string"),
        "dedup_state_dir": Param(DEDUP_STATE_DIR, type="string",
                                 description="passed on: the one cross-snapshot dedup state every snapshot reads and extends"),
    },
) as dag:
    find = BashOperator(
        task_id="find_newest_uncurated",
        bash_command=(
            f"{PYTHON} -m curation.snapshot_watch --cc-base {{{{ params.cc_base | sh }}}}"
            " --out-root {{ params.output_root | sh }} --lookback {{ params.lookback | int }}"
            "{% if params.collinfo %} --collinfo {{ params.collinfo | sh }}{% endif %}"
        ),
        cwd=str(REPO),
        append_env=True,
        execution_timeout=timedelta(minutes=10),
        do_xcom_push=True,  # the last stdout line: {"snapshot": ..., "output": ...}
    )

    @task.short_circuit(task_id="has_new_snapshot")
    def has_new_snapshot(found: str) -> bool:
        """Stop here (skipping the trigger) when every recent snapshot is curated."""
        return bool(json.loads(found).get("snapshot"))

    trigger = TriggerDagRunOperator(
        task_id="trigger_curate",
        trigger_dag_id=CURATE_DAG_ID,
        trigger_run_id="cc__{{ %s.snapshot }}" % FOUND,
        skip_when_already_exists=True,
        execution_timeout=timedelta(minutes=10),
        conf={
            "snapshot": "{{ %s.snapshot }}" % FOUND,
            "output": "{{ %s.output }}" % FOUND,
            "cc_base": "{{ params.cc_base }}",
            "limit": "{{ params.limit }}",
            "spark_master": "{{ params.spark_master }}",
            "dask_scheduler": "{{ params.dask_scheduler }}",
            "config": "{{ params.config }}",
            "dedup_state_dir": "{{ params.dedup_state_dir }}",
        },
    )

    has_new_snapshot(find.output) >> trigger
