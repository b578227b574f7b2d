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

# Columns the image stage adds to a row once its image was fetched and passed the filters.
_IMAGE_FIELDS = [
    pa.field("image", pa.binary()),  # original (or resized, by config) encoded bytes
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("sha256", pa.string()),  # of the bytes stored in ``image``
]

# One row per unique image URL that was fetched and kept (the image stage's ``images/``).
IMAGES = pa.schema(
    [pa.field("url", pa.string(), nullable=False)]
    + _IMAGE_FIELDS
    + [
        pa.field("format", pa.string()),  # jpeg | png | webp
        pa.field("phash", pa.string()),  # 64-bit perceptual hash, hex
    ]
)

# Pairs with their image: what the image stage writes and the score stage, the trainer
# and CapFilt read. ``key`` is the PAIRS key.
IMAGE_PAIRS = pa.schema(list(PAIRS) + _IMAGE_FIELDS)

# Pairs after scoring: ``clip_score`` is the cosine of the L2-normalised CLIP image and
# caption embeddings; ``embedding_row`` indexes the shard's embedding arrays. ``nsfw_score`` (P(NSFW))
# and ``aesthetic_score`` are LAION's heads on the image embedding (models/safety_heads.py), null
# when no released head fits the score model (docs/safety.md).
SCORED_PAIRS = pa.schema(
    list(IMAGE_PAIRS)
    + [
        pa.field("clip_score", pa.float32()),
        pa.field("embedding_row", pa.int64()),
        pa.field("nsfw_score", pa.float32()),
        pa.field("aesthetic_score", pa.float32()),
        # Faces (models/faces.py): count, MMC4's face_detections (null: none; else [x0, y0, x1, y1] boxes),
        # MMC4's fewer-faces flag (no face detected); null when not computed (safety.faces: false).
        pa.field("face_count", pa.int32()),
        pa.field("face_detections", pa.list_(pa.list_(pa.int32()))),
        pa.field("is_fewer_faces", pa.bool_()),
    ]
)

# The score stage's image table (``score/images``): one row per unique image phase 1 decoded, without
# its bytes (they stay in ``images/images``): the same safety columns the pairs carry, computed once per
# image, so a release or a report can filter or blur by image without going through the pairs.
SCORED_IMAGES = pa.schema(
    [pa.field("url", pa.string(), nullable=False)]
    + [f for f in _IMAGE_FIELDS if f.name != "image"]
    + [f for f in SCORED_PAIRS if f.name in ("nsfw_score", "aesthetic_score", "face_count", "face_detections",
                                             "is_fewer_faces")]
)

# Pairs after CapFilt: one row per (image, caption) that passed the filter. ``key`` is
# ``<image pair key>`` for the web caption and ``<image pair key>-syn<k>`` for synthetic
# captions; ``image_key`` is the pair key the image came from.
BOOTSTRAPPED_PAIRS = pa.schema(
    list(SCORED_PAIRS)
    + [
        pa.field("image_key", pa.string()),
        pa.field("itm_score", pa.float32()),  # the filter's p(match)
        pa.field("caption_model", pa.string()),  # who wrote the caption: "web" or the captioner's name
    ]
)

# Interleaved documents with their images inline, aligned with ``images``: position i
# holds the bytes of ``images[i]`` and null at text positions. Images that were not
# fetched or did not pass are removed from all aligned lists (texts/images/metadata).
INTERLEAVED = pa.schema(list(DOCUMENTS) + [pa.field("image_bytes", pa.list_(pa.binary()))])

SCHEMAS: dict[str, pa.Schema] = {
    "documents": DOCUMENTS,
    "pairs": PAIRS,
    "rejects": REJECTS,
    "images": IMAGES,
    "image_pairs": IMAGE_PAIRS,
    "scored_pairs": SCORED_PAIRS,
    "scored_images": SCORED_IMAGES,
    "bootstrapped_pairs": BOOTSTRAPPED_PAIRS,
    "interleaved": INTERLEAVED,
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
