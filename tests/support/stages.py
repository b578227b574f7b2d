"""Hand-built input stages for stage tests: Parquet where a stage would write it, plus its marker."""
from __future__ import annotations

import json
from pathlib import Path


def mark_complete(stage_dir: Path) -> None:
    """Write ``stage_dir``'s completion marker with its file list, as the runner would (the runner
    refuses an input stage without one, and checks each listed file's size and row count)."""
    from curation.stage import MARKER, MARKER_VERSION
    from curation.stage_files import list_files

    (stage_dir / MARKER).write_text(json.dumps({"version": MARKER_VERSION, "stage": stage_dir.name,
                                                "run_id": f"test-{stage_dir.name}", "files": list_files(str(stage_dir))}))
