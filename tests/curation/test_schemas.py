"""The schemas, defined once: each later schema extends its parent, and every one has a Spark DDL."""
from __future__ import annotations

import re

import pyarrow as pa
import pytest

from curation import schemas as S


def test_extensions_keep_their_parents_columns_in_order():
    for child, parent in ((S.IMAGE_PAIRS, S.PAIRS), (S.INTERLEAVED, S.DOCUMENTS)):
        assert child.names[: len(parent.names)] == parent.names
        for f in parent:
            assert child.field(f.name).type == f.type
    for later in (S.SCORED_PAIRS, S.BOOTSTRAPPED_PAIRS):
        assert set(S.PAIRS.names) <= set(later.names)


def test_documents_are_obelics_shaped():
    assert S.DOCUMENTS.field("texts").type == pa.list_(pa.string())
    assert S.DOCUMENTS.field("images").type == pa.list_(pa.string())
    assert S.REJECTS.names[:3] == ["row_id", "table", "stage"]
    assert "reason" in S.REJECTS.names and "duplicate_of" in S.REJECTS.names


def test_registry_of_schemas_has_unique_names_and_column_sets():
    assert len({tuple(s.names) for s in S.SCHEMAS.values()}) == len(S.SCHEMAS)
    for name, schema in S.SCHEMAS.items():
        assert len(set(schema.names)) == len(schema.names), name


@pytest.mark.parametrize("name", sorted(S.SCHEMAS))
def test_every_schema_has_a_spark_ddl_naming_each_column(name):
    ddl = S.spark_ddl(S.SCHEMAS[name])
    assert re.findall(r"`([^`]+)` ", ddl) == S.SCHEMAS[name].names


def test_spark_ddl_types_and_refusal():
    schema = pa.schema([("a", pa.string()), ("b", pa.float32()), ("c", pa.list_(pa.binary())), ("d", pa.int64())])
    assert S.spark_ddl(schema) == "`a` string, `b` float, `c` array<binary>, `d` bigint"
    with pytest.raises(TypeError, match="no Spark DDL"):
        S.spark_ddl(pa.schema([("m", pa.map_(pa.string(), pa.string()))]))
