"""A bad value in a streamed source is reported by column and row of the file."""

import numpy as np
import pytest

from posheads.inference.stream import ArraySource, ParquetSource


def test_parquet_source_names_the_column_and_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"a": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                      "b": [1.0, 2.0, 3.0, 4.0, None, 6.0],
                      "n": [1.0, 0.0, 2.0, 1.0, 3.0, -1.0]})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=2)
    src = ParquetSource(tmp_path / "d.parquet", ["a", "b"], "n", batch_size=2, shuffle=False)
    # row 4 of the file is row 0 of the third row group
    with pytest.raises(ValueError, match=r"X contains NaN, missing or infinite values in "
                                         r"column 'b', row 4 \(row group 2\)"):
        list(src)
    src = ParquetSource(tmp_path / "d.parquet", ["a"], "n", batch_size=2, shuffle=False)
    with pytest.raises(ValueError, match=r"y must be non-negative: negative values in "
                                         r"column 'n', row 5 \(row group 2\)"):
        list(src)


def test_array_source_names_the_column_by_position():
    X = np.ones((6, 3))
    X[4, 2] = np.inf
    src = ArraySource(X, np.ones(6), batch_size=3, block_size=3, shuffle=False)
    with pytest.raises(ValueError, match=r"X contains NaN.* in column 2, row 4 \(rows 3\.\.5\)"):
        list(src)
