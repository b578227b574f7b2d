"""What a finished stage wrote, file by file, and whether it is all still there.

The completion marker says a stage finished; it cannot say its outputs survived. A part file
deleted by hand, a copy cut short, a disk that filled while another job wrote: the next stage
would read what is left, conserve *those* rows and finish with a fraction of the data. So the
runner records, when a stage finishes, every file of every output with its byte size and, for
Parquet, the row count from its footer (:func:`list_files`); before a stage starts, it checks
its inputs against that list (:func:`damaged_files`). Both read sizes and footers only (a few
KiB per file, driver-side, in a thread pool), never the data, so the check takes seconds.

Files and directories whose name starts with ``_`` or ``.`` are not outputs (``_SUCCESS``,
``.crc``, ``_temporary``, ``_work``): every Parquet reader skips them too.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fsspec.core import url_to_fs

# Stage-level files that are not an output dataset.
NOT_OUTPUTS = ("stats.json",)
# Footer reads in flight at once (object stores: one or two range requests per file).
FOOTER_THREADS = 16

Listing = dict[str, dict[str, dict[str, int | None]]]


def _is_output_file(rel: str) -> bool:
    return not any(part.startswith(("_", ".")) for part in rel.split("/")) and rel not in NOT_OUTPUTS


def _relative(base: str, full: str) -> str:
    return full[len(base):].lstrip("/") if full.startswith(base) else full


def _footer_rows(fs: Any, paths: list[str]) -> list[int | BaseException]:
    """Row count of each Parquet file from its footer, or the exception reading it raised."""
    import pyarrow.parquet as pq

    def one(path: str) -> int | BaseException:
        try:
            with fs.open(path, "rb") as fh:
                return pq.ParquetFile(fh).metadata.num_rows
        except Exception as exc:  # a truncated or foreign file: reported, not raised, so every file is checked
            return exc

    if not paths:
        return []
    with ThreadPoolExecutor(min(FOOTER_THREADS, len(paths))) as pool:
        return list(pool.map(one, paths))


def list_files(stage_dir: str) -> Listing:
    """``{output: {"<output>/<file>": {"bytes": n, "rows": n or None}}}`` for everything under ``stage_dir``.

    ``output`` is the top-level entry (``documents``, ``rejects``, ``webdataset``, or a file written
    beside them); ``rows`` is the Parquet footer's count for ``*.parquet`` files, None otherwise.
    Raises when a Parquet file the stage just wrote has no readable footer: a stage must not be
    marked complete over a broken output.
    """
    fs, base = url_to_fs(stage_dir)
    base = base.rstrip("/")
    listing: Listing = {}
    parquet: list[tuple[str, dict[str, int | None]]] = []
    for full, info in sorted(fs.find(base, detail=True).items()):
        rel = _relative(base, full)
        if info.get("type", "file") != "file" or not _is_output_file(rel):
            continue
        entry: dict[str, int | None] = {"bytes": int(info.get("size") or 0), "rows": None}
        listing.setdefault(rel.split("/", 1)[0], {})[rel] = entry
        if rel.endswith(".parquet"):
            parquet.append((full, entry))
    for (full, entry), rows in zip(parquet, _footer_rows(fs, [p for p, _ in parquet])):
        if isinstance(rows, BaseException):
            raise OSError(f"{full}: the Parquet file just written has no readable footer: {rows}") from rows
        entry["rows"] = rows
    return listing


def damaged_files(stage_dir: str, files: dict[str, dict[str, int | None]]) -> list[str]:
    """What is wrong with ``files`` (one output's entry of :func:`list_files`) under ``stage_dir`` now.

    One line per missing file, size mismatch (a truncated or overwritten file), unreadable
    Parquet footer or footer row count that differs from the listing; empty when all is as written.
    """
    fs, base = url_to_fs(stage_dir)
    base = base.rstrip("/")
    tops = sorted({rel.split("/", 1)[0] for rel in files})
    present: dict[str, int] = {}
    for top in tops:
        path = f"{base}/{top}"
        if not fs.exists(path):
            continue
        found = fs.find(path, detail=True) if fs.isdir(path) else {path: fs.info(path)}
        for full, info in found.items():
            present[_relative(base, full)] = int(info.get("size") or 0)
    problems: list[str] = []
    footers: list[tuple[str, int | None]] = []
    for rel, want in sorted(files.items()):
        if rel not in present:
            problems.append(f"{rel}: missing")
        elif present[rel] != want["bytes"]:
            problems.append(f"{rel}: {present[rel]} bytes, the stage wrote {want['bytes']} (truncated or overwritten)")
        elif rel.endswith(".parquet"):
            footers.append((rel, want.get("rows")))
    for (rel, rows_listed), rows in zip(footers, _footer_rows(fs, [f"{base}/{rel}" for rel, _ in footers])):
        if isinstance(rows, BaseException):
            problems.append(f"{rel}: Parquet footer unreadable ({type(rows).__name__}: {rows})")
        elif rows_listed is not None and rows != rows_listed:
            problems.append(f"{rel}: {rows} rows in its footer, the stage wrote {rows_listed}")
    return problems
