"""Regenerate ``tests/support/data/images_sample_before.json`` from the single-process reference stage.

``python -m tests.support.regen_images_snapshot <run root> [<commit>]``

``<run root>``: the current code's ``extract`` and ``dedup`` on the 80-page sample, with the
``sample_run`` fixture's settings of tests/pipelines/test_images.py (``sample_pages: 80``,
``images.processes: 1``, any free ``sample_image_port``). The snapshot must come from the
single-process stage, never from the Spark stage the test compares with it (the test would then
prove nothing), so this script exports ``<commit>`` (default 62bd2a3, the last commit whose images
stage was :func:`pipelines.images.fetch_and_filter` plus the Arrow joins in one process; the image
filters, the fetch and the safety checks have not changed since) with ``git archive``, and runs that
commit's ``ImageStage`` in a subprocess whose ``PYTHONPATH`` starts with the export, on
``<run root>/dedup``'s outputs, into a scratch run that links ``<run root>/_sample`` and ``dedup``
(the old stage serves the sample's images itself). Then it writes
:func:`tests.support.images_snapshot.images_snapshot` of that scratch run.

Rerun it when a change upstream of the images stage (extract's or dedup's rules, the sample)
changes which documents reach it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.images_snapshot import BEFORE, images_snapshot

REFERENCE_COMMIT = "62bd2a3"
REPO = Path(__file__).resolve().parents[2]

# Run inside the export: every project import resolves to the reference commit's modules.
_RUN_OLD_STAGE = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from curation.config import PipelineConfig
from curation.stage import StageContext
from pipelines.images import ImageStage
import curation.stage, pipelines.images
assert curation.stage.__file__.startswith(sys.argv[3]), curation.stage.__file__  # the export, not the checkout
root, port = sys.argv[1], int(sys.argv[2])
cfg = PipelineConfig.load(None, {"out": root, "sample_pages": 80, "sample_image_port": port, "images.processes": 1})
ctx = StageContext(stage_dir=f"{root}/images", inputs={"documents": f"{root}/dedup/documents",
                   "pairs": f"{root}/dedup/pairs"}, config=cfg, run_id="images-reference")
stats = ImageStage().run(ctx)
print(json.dumps({"rows_in": stats.rows_in, "rows_out": stats.rows_out, "rejected": stats.rejected}))
"""


def reference_run(run_root: Path, scratch: Path, commit: str = REFERENCE_COMMIT) -> Path:
    """The reference commit's single-process images stage on ``run_root``'s dedup output; returns the
    scratch run root holding its ``images/``."""
    export = scratch / f"src-{commit}"
    export.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(export)], input=archive, check=True)
    root = scratch / "run"
    root.mkdir()
    for name in ("_sample", "dedup"):
        (root / name).symlink_to((run_root / name).resolve())
    base = json.loads((run_root / "_sample" / "manifest.json").read_text())["image_base_url"]
    port = int(base.rstrip("/").rsplit(":", 1)[1])
    env = {**os.environ, "PYTHONPATH": str(export)}
    subprocess.run([sys.executable, "-B", "-c", _RUN_OLD_STAGE, str(root), str(port), str(export)],
                   cwd=export, env=env, check=True)
    return root


def main(argv: list[str]) -> None:
    run_root = Path(argv[0])
    commit = argv[1] if len(argv) > 1 else REFERENCE_COMMIT
    with tempfile.TemporaryDirectory(prefix="images-reference-") as tmp:
        root = reference_run(run_root, Path(tmp), commit)
        BEFORE.write_text(json.dumps(images_snapshot(root), indent=0, ensure_ascii=False) + "\n")
    print(f"wrote {BEFORE} from {commit}'s single-process images stage on {run_root}/dedup")


if __name__ == "__main__":
    main(sys.argv[1:])
