"""What both vl-curation DAGs share: where the project is and how tasks call it.

The DAGs run in Airflow's own environment (``.venv-airflow``: Airflow's pins clash with
the project's), and every task calls the project's own CLI from the project's
environment, so the scheduler never imports Spark, Dask or torch. Set on a deployment:

- ``VLC_HOME``: the project checkout (default: two folders above this file);
- ``VLC_VENV``: the project's virtual environment (default ``$VLC_HOME/.venv``);
- ``VLC_OUTPUT_ROOT``: where runs live, ``<root>/<snapshot>/`` (default ``$VLC_HOME/out``);
- ``VLC_DEDUP_STATE_DIR``: the cross-snapshot dedup state every snapshot reads and extends
  (default ``$VLC_OUTPUT_ROOT/_dedup_state``; empty: each snapshot deduplicated on its own);
- ``VLC_TASK_RETRIES`` / ``VLC_RETRY_DELAY_S``: retries per task (default 2, 300 s apart, backing off).

Only :func:`curation.registry.stage_order` is imported from the project at parse time
(it needs nothing beyond PyYAML and fsspec, which Airflow has), so the task list follows
the stage registry: a stage added there becomes a task here.
"""
from __future__ import annotations

import os
import shlex
import sys
from datetime import timedelta
from pathlib import Path

REPO = Path(os.environ.get("VLC_HOME") or Path(__file__).resolve().parents[2])
VENV = Path(os.environ.get("VLC_VENV") or REPO / ".venv")
CURATE = str(VENV / "bin" / "curate")
PYTHON = str(VENV / "bin" / "python")
OUTPUT_ROOT = os.environ.get("VLC_OUTPUT_ROOT") or str(REPO / "out")
# One cross-snapshot dedup state for every snapshot (pipelines/dedup_state.py); empty: none.
DEDUP_STATE_DIR = os.environ.get("VLC_DEDUP_STATE_DIR", f"{OUTPUT_ROOT}/_dedup_state")

CURATE_DAG_ID = "vlc_curate_snapshot"
WATCH_DAG_ID = "vlc_cc_snapshot_watch"

# Every task: retried (a lost executor, a flaky S3 read) and time-limited (a hung job
# must not hold the cluster forever). Stages resume: the runner redoes only what has no
# completion marker.
DEFAULT_ARGS = {
    "owner": "vl-curation",
    "retries": int(os.environ.get("VLC_TASK_RETRIES", "2")),
    "retry_delay": timedelta(seconds=int(os.environ.get("VLC_RETRY_DELAY_S", "300"))),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=12),
}
# Per-task limits where the default does not fit.
TIMEOUTS = {
    "extract": timedelta(hours=24),
    "dedup": timedelta(hours=12),
    "report": timedelta(hours=2),
    "card": timedelta(minutes=30),
}

JINJA_FILTERS = {"sh": shlex.quote}


def stage_names() -> tuple[str, ...]:
    """The pipeline's stages in run order, from the project's registry."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from curation.registry import stage_order

    return stage_order()
