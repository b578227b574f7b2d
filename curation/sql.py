"""Load the project's Spark SQL files (``<repo>/sql/<name>.sql``).

The relational steps of the Spark jobs live in ``sql/`` so analysts can read
and rerun them. Placeholders are ``{name}`` (``str.format``), normally table
(view) names or column lists; literal braces in SQL are written ``{{ }}``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


@lru_cache(maxsize=None)
def _read(name: str) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no SQL file {path}")
    return path.read_text()


def load_sql(name: str, **params: object) -> str:
    """The text of ``sql/<name>.sql`` with ``{placeholders}`` filled from ``params``."""
    text = _read(name)
    try:
        return text.format(**params)
    except KeyError as exc:
        raise KeyError(f"sql/{name}.sql needs parameter {exc.args[0]!r}") from None
