"""Streaming Parquet (pipelines/core/io.py): ParquetSink writes one file piece by piece and atomically; RowReader
reads a row range through the row groups."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core import io, schema


def _drops(n: int, start: int = 0) -> pd.DataFrame:
    return schema.drop_rows([f"p{i}" for i in range(start, start + n)], "select", "tie", [f"d{i}" for i in
                                                                                          range(start, start + n)])


def test_sink_writes_pieces_in_order_as_one_file(tmp_path):
    path = tmp_path / "drops.parquet"
    with io.ParquetSink(path, schema.DROPS) as sink:
        sink.write(_drops(3))
        sink.write(schema.to_table(_drops(2, start=3), schema.DROPS))  # an arrow table works as well
        sink.write(_drops(0))
        assert not path.exists()  # only the temporary file exists until close
    assert sink.rows == 5
    got = io.read_table(path, schema.DROPS)
    pd.testing.assert_frame_equal(got, schema.to_table(_drops(5), schema.DROPS).to_pandas())
    assert pq.ParquetFile(path).num_row_groups == 1  # small pieces are buffered into one row group


def test_sink_flushes_row_groups_at_the_byte_threshold(tmp_path):
    path = tmp_path / "drops.parquet"
    sink = io.ParquetSink(path, schema.DROPS, row_group_bytes=1)  # every piece is over the threshold
    for i in range(4):
        sink.write(_drops(10, start=10 * i))
    sink.close()
    assert pq.ParquetFile(path).num_row_groups == 4 and pq.ParquetFile(path).metadata.num_rows == 40


def test_an_error_leaves_neither_the_file_nor_its_temporary(tmp_path):
    path = tmp_path / "drops.parquet"
    path.write_bytes(b"old")  # a file of an earlier attempt stays as it was
    with pytest.raises(ValueError, match="not in the schema"):
        with io.ParquetSink(path, schema.DROPS) as sink:
            sink.write(_drops(3))
            sink.write(pd.DataFrame({"nope": [1]}))
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["drops.parquet"]


def test_row_reader_ranges_across_row_groups(tmp_path):
    path = tmp_path / "t.parquet"
    table = pa.table({"i": list(range(23)), "s": [f"r{i}" for i in range(23)]})
    pq.write_table(table, path, row_group_size=5)
    reader = io.RowReader(path, table.schema)
    assert reader.num_rows == 23
    for start, stop in [(0, 5), (3, 12), (5, 10), (0, 23), (20, 30), (22, 23), (7, 7), (30, 40)]:
        assert reader.rows(start, stop).to_pydict() == table.slice(start, max(0, min(stop, 23) - start)).to_pydict()


def test_read_rows_in_reads_only_the_row_groups_that_hold_a_match(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    table = pa.table({"k": [f"p{i % 7}" for i in range(40)], "i": list(range(40)), "s": [f"r{i}" for i in range(40)]})
    pq.write_table(table.sort_by("k"), path, row_group_size=8)  # p0..p6 in sorted runs over 5 groups
    wanted = ["p1", "p5", "nope"]
    reads = []
    real = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kwargs):
        reads.append((i, tuple(columns or ())))
        return real(self, i, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    got = io.read_rows_in(path, "k", wanted, ["i", "s"])
    expected = table.sort_by("k").filter(pa.compute.is_in(table.sort_by("k")["k"], pa.array(wanted)))
    assert got.to_pydict() == expected.select(["i", "s"]).to_pydict() and got.num_rows == 11
    sorted_keys = table.sort_by("k")["k"].to_pylist()
    holding = {g for g in range(5) if set(sorted_keys[8 * g:8 * g + 8]) & set(wanted)}
    assert {i for i, cols in reads if cols != ("k",)} == holding and len(holding) < 5  # the others: key only
    assert io.read_rows_in(path, "k", ["nope"], ["i"]).num_rows == 0
    assert io.read_rows_in(path, "k", ["nope"], ["i"]).schema.names == ["i"]
