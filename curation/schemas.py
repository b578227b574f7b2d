"""Arrow schemas of every dataset the pipeline writes, defined once.

Every stage writes Parquet with one of these schemas, and every reader
(Spark, Dask, HF ``datasets``, the trainer) relies on them. Column names of the
interleaved documents follow OBELICS (``texts``/``images`` aligned lists, JSON
``metadata`` and ``general_metadata`` strings) so OBELICS tooling reads them.
"""
from __future__ import annotations

import pyarrow as pa

# OBELICS-style interleaved web documents. ``texts[i]`` and ``images[i]`` describe
# position i of the page: exactly one of them is non-null. ``metadata`` is a JSON
# list aligned with the positions (null for text, a dict for images);
# ``general_metadata`` is a JSON dict about the page and its WARC record.
DOCUMENTS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("texts", pa.list_(pa.string())),
        pa.field("images", pa.list_(pa.string())),
        pa.field("metadata", pa.string()),
        pa.field("general_metadata", pa.string()),
        pa.field("lang", pa.string()),
        pa.field("lang_score", pa.float32()),
    ]
)

# Image-text pair candidates: one row per image that carries usable caption text.
PAIRS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("caption_source", pa.string()),  # alt | figcaption | title
        pa.field("page_url", pa.string()),
        pa.field("doc_id", pa.string()),
    ]
)

# Every row a stage does not pass on, with why. ``row_id`` is the id the stage's
# input uses (doc_id, pair key, or ``<warc file>@<offset>`` for raw records) and
# ``table`` says which input table it came from;
# ``duplicate_of`` names the kept row for deduplication rejects.
REJECTS = pa.schema(
    [
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("table", pa.string(), nullable=False),  # records | documents | pairs | images
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("duplicate_of", pa.string()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "documents": DOCUMENTS,
    "pairs": PAIRS,
    "rejects": REJECTS,
}


def spark_ddl(schema: pa.Schema) -> str:
    """The Spark DDL string of an Arrow schema (only the types used above)."""
    def ddl_type(t: pa.DataType) -> str:
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return "string"
        if pa.types.is_float32(t):
            return "float"
        if pa.types.is_float64(t):
            return "double"
        if pa.types.is_int64(t):
            return "bigint"
        if pa.types.is_int32(t):
            return "int"
        if pa.types.is_boolean(t):
            return "boolean"
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return "binary"
        if pa.types.is_list(t):
            return f"array<{ddl_type(t.value_type)}>"
        raise TypeError(f"no Spark DDL for {t}")

    return ", ".join(f"`{f.name}` {ddl_type(f.type)}" for f in schema)
