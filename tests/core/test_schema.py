"""The schema: content-hash ids, tables checked against their schemas, and the one drop-row constructor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.core import ids, schema


def test_ids_are_content_hashes():
    a = schema.user_messages("What is 2+2?")
    assert ids.prompt_id(a) == ids.prompt_id([dict(m) for m in a])
    assert ids.prompt_id(a) != ids.prompt_id(schema.user_messages("What is 2+3?"))
    assert ids.prompt_id(a) != ids.prompt_id(schema.user_messages("What is 2+2?", system="Be brief."))
    c1 = ids.candidate_id("p", "m", 1, 0, "four")
    assert c1 == ids.candidate_id("p", "m", 1, 0, "four")
    assert c1 != ids.candidate_id("p", "m", 1, 1, "four")


def test_to_table_rejects_unknown_columns_and_fills_missing():
    with pytest.raises(ValueError, match="not in the schema"):
        schema.to_table(pd.DataFrame({"prompt_id": ["x"], "bogus": [1]}), schema.DROPS)
    t = schema.to_table(pd.DataFrame({"prompt_id": ["x"], "stage": ["load"], "reason": ["tie"]}), schema.DROPS)
    assert t.schema == schema.DROPS and t.column("candidate_id").null_count == 1


def test_drop_rows_refuses_unknown_reason():
    with pytest.raises(ValueError, match="unknown drop reason"):
        schema.drop_rows(["p"], "select", "because")


def test_drop_rows_accepts_sequences_series_and_arrow():
    d = schema.drop_rows(pd.Index(["a", "b"]), "select", "tie", pd.Series(["x", None], index=[7, 3]),
                         rule="r", candidate_ids=np.array(["c", None], dtype=object))
    assert list(d.columns) == schema.DROPS.names
    assert d["prompt_id"].tolist() == ["a", "b"] and d["detail"].iloc[0] == "x" and pd.isna(d["detail"].iloc[1])
    assert d["candidate_id"].iloc[0] == "c" and pd.isna(d["candidate_id"].iloc[1])
    assert (d["rule"] == "r").all() and (d["reason"] == "tie").all()
    g = schema.drop_rows((p for p in ["a"]), "select", "tie")
    assert g["detail"].tolist() == [""] and g["candidate_id"].isna().all()
    with pytest.raises(ValueError, match="different lengths"):
        schema.drop_rows(["a"], "select", "tie", ["x", "y"])
    with pytest.raises(ValueError, match="unknown drop reason"):
        schema.drop_rows(["a"], "select", "nope")


def test_long_constant_columns_share_one_block_and_small_ones_pickle_small():
    import pickle
    n = 3 * schema.CONSTANT_BLOCK_ROWS + 5
    d = schema.drop_rows([f"p{i}" for i in range(n)], "select", "not_selected", rule="max_min")
    assert (d["reason"] == "not_selected").all() and (d["rule"] == "max_min").all() and len(d) == n
    assert (d["stage"] == "select").sum() == n and d["detail"].eq("").all()
    chunks = d["reason"].array._pa_array.chunks
    assert len(chunks) == 4 and len({c.buffers()[2].address for c in chunks[:3]}) == 1  # one block, no copies
    assert schema.constant(None, n).null_count == n
    small = schema.constant("not_selected", 3)
    assert small.to_pylist() == ["not_selected"] * 3
    assert len(pickle.dumps(small)) < 1000  # its own 3 rows, not a slice of the cached block
