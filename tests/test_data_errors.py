"""Bad data where it enters (files, dataset constructors, generators) gives a clear DataError.

Each case asserts the exception type and the distinctive part of the message: the file and its
split, the column and the data row (0-based, header excluded) where known.
"""

import numpy as np
import pytest
import torch

import bidfcl
from bidfcl.data import DataError, UpliftDataset, load_criteo_uplift, load_table, make_marketing

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

COLS = dict(features=["a"], treatment="t", revenue="r", cost="c")


def _csv(path, rows):
    path.write_text("a,t,r,c\n" + "".join(row + "\n" for row in rows))
    return path


def _parquet(path, n=2000, **override):
    cols = {"a": np.linspace(0, 1, n), "t": np.arange(n) % 2, "r": np.ones(n), "c": np.ones(n)}
    cols.update(override)
    pq.write_table(pa.table(cols), path, row_group_size=500)
    return path


# -------------------------------------------------------------------------------- option count


def test_treatment_typo_is_rejected_where_it_is_read(tmp_path):
    f = _csv(tmp_path / "obs.csv", ["1,0,1,1", "2,1e12,1,1", "3,1,1,1"])
    with pytest.raises(
        DataError,
        match=r"expected treatment in \[0, 256\) \(at most bidfcl.MAX_OPTIONS = 256 "
        r"options\) in column 't' in .*obs.csv \(split 'obs'\), got 1000000000000 "
        r"at data row 1",
    ):
        load_table(f, **COLS, split="obs")  # used to build a dataset of 10^12 options
    f = _parquet(tmp_path / "rct.parquet", t=np.where(np.arange(2000) == 1500, 300, np.arange(2000) % 2))
    with pytest.raises(DataError, match=r"got 300 at data row 1500"):
        load_table(f, **COLS)
    assert load_table(_csv(tmp_path / "ok.csv", ["1,0,1,1", "2,255,1,1"]), **COLS).n_options == 256


def test_n_options_argument_is_bounded(tmp_path):
    f = _csv(tmp_path / "d.csv", ["1,0,1,1"])
    with pytest.raises(ValueError, match=r"n_options must be an integer in \[1, 256\].*got 1000"):
        load_table(f, **COLS, n_options=1000)
    with pytest.raises(DataError, match=r"treatment in \[0, 2\) \(n_options = 2\) in column 't'.*got 3 at data row 0"):
        load_table(_csv(tmp_path / "e.csv", ["1,3,1,1"]), **COLS, n_options=2)


# ------------------------------------------------------------------------- unreadable files


def test_corrupted_parquet_names_file_and_split(tmp_path):
    good = _parquet(tmp_path / "good.parquet")
    raw = good.read_bytes()
    bad = tmp_path / "val.parquet"
    bad.write_bytes(raw[: len(raw) // 2])  # truncated: the footer is gone
    with pytest.raises(DataError, match=r"could not read .*val.parquet \(split 'val'\) as Parquet \(corrupted"):
        load_table(bad, **COLS, split="val")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1" + b"\x07" * 500 + b"PAR1")
    with pytest.raises(DataError, match=r"could not read .*junk.parquet \(split 'test'\) as Parquet"):
        load_table(junk, **COLS, split="test")
    with pytest.raises(DataError, match=r"could not read .*junk.parquet \(split 'rct'\) as Parquet"):
        load_criteo_uplift(junk, split="rct")


def test_parquet_with_damaged_data_pages(tmp_path):
    good = _parquet(tmp_path / "good.parquet", n=20000)
    raw = bytearray(good.read_bytes())
    meta = pq.ParquetFile(good).metadata
    col = meta.row_group(2).column(2)  # 'r' of the third row group: overwrite its page bytes
    start = col.data_page_offset
    raw[start : start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    bad = tmp_path / "obs.parquet"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"obs.parquet \(split 'obs'\)"):
        load_table(bad, **COLS, split="obs")


def test_directory_instead_of_a_file(tmp_path):
    d = tmp_path / "data.csv"
    d.mkdir()
    with pytest.raises(DataError, match=r"expected a Parquet or CSV file, got a directory: .*data.csv \(split 'rct'\)"):
        load_table(d, **COLS, split="rct")


def test_missing_file_names_the_split(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such file .*nope.csv \(split 'test'\)"):
        load_table(tmp_path / "nope.csv", **COLS, split="test")


# ------------------------------------------------------------------------- bad cells, columns


def test_non_numeric_csv_cell_names_column_and_row(tmp_path):
    f = _csv(tmp_path / "rct.csv", ["1,0,1,1", "2,1,1,1", "3,0,abc,1"])
    with pytest.raises(
        DataError,
        match=r"expected numeric values in .*rct.csv \(split 'rct'\): column 'r' holds "
        r"'abc' at data row 2, not a number",
    ):
        load_table(f, **COLS, split="rct")


def test_missing_column_names_file_and_split(tmp_path):
    f = _csv(tmp_path / "val.csv", ["1,0,1,1"])
    with pytest.raises(DataError, match=r"expected columns \['gmv'\] in .*val.csv \(split 'val'\), not found"):
        load_table(f, ["a"], "t", "gmv", "c", split="val")


def test_nan_in_required_column(tmp_path):
    r = np.ones(2000)
    r[1234] = np.nan
    f = _parquet(tmp_path / "test.parquet", r=r)
    with pytest.raises(
        DataError,
        match=r"expected finite values in column 'r' of .*test.parquet \(split 'test'\), "
        r"got nan at data row 1234",
    ):
        load_table(f, **COLS, split="test")
    f = _csv(tmp_path / "obs.csv", ["1,0,1,1", "2,1,1,"])
    with pytest.raises(DataError, match=r"no missing values in column 'c' of .*obs.csv \(split 'obs'\).*data row 1"):
        load_table(f, **COLS, split="obs")


def test_negative_cost_and_bad_propensity_name_their_column(tmp_path):
    f = _csv(tmp_path / "d.csv", ["1,0,1,1", "2,1,1,-2"])
    with pytest.raises(
        DataError, match=r"non-negative cost in column 'c' in .*d.csv \(split 'rct'\), got -2 at data row 1"
    ):
        load_table(f, **COLS, split="rct")
    f = _parquet(tmp_path / "p.parquet", p=np.where(np.arange(2000) == 7, 1.5, 0.5))
    with pytest.raises(DataError, match=r"propensity in \(0, 1\] in column 'p' .*got 1.5 at data row 7"):
        load_table(f, **COLS, propensity="p")


# ------------------------------------------------------------------------ dataset constructors


def _rows(n=6):
    return dict(
        x=torch.zeros(n, 2), treatment=torch.tensor([0, 1, 2, 0, 1, 2]), revenue=torch.ones(n), cost=torch.ones(n)
    )


def test_dataset_constructor_checks_treatment():
    good = _rows()
    with pytest.raises(DataError, match=r"treatment of an UpliftDataset must be int64 .*got dtype torch.float32"):
        UpliftDataset(**{**good, "treatment": good["treatment"].float()})
    with pytest.raises(DataError, match=r"treatment of an UpliftDataset must be 1-D \[N\]"):
        UpliftDataset(**{**good, "treatment": good["treatment"].unsqueeze(1)})
    big = good["treatment"].clone()
    big[4] = 10**12
    with pytest.raises(
        DataError,
        match=r"treatment in \[0, 256\) \(M = max\(treatment\) \+ 1 options, at most "
        r"bidfcl.MAX_OPTIONS = 256\), got 1000000000000 at row 4",
    ):
        UpliftDataset(**{**good, "treatment": big})
    with pytest.raises(DataError, match=r"n_options an integer in \[0, 256\].*got 300"):
        UpliftDataset(**good, n_options=300)


def test_dataset_constructor_checks_types_and_shapes():
    good = _rows()
    with pytest.raises(DataError, match=r"x of an UpliftDataset must be a torch.Tensor, got ndarray"):
        UpliftDataset(**{**good, "x": np.zeros((6, 2))})
    with pytest.raises(DataError, match=r"expected revenue with N=6 rows"):
        UpliftDataset(**{**good, "revenue": torch.ones(5)})
    with pytest.raises(DataError, match=r"expected x of shape \[N=6, F\]"):
        UpliftDataset(**{**good, "x": torch.zeros(6)})


def test_make_marketing_bounds_the_option_count():
    with pytest.raises(ValueError, match=r"expected n_options in \[2, 256\] \(bidfcl.MAX_OPTIONS"):
        make_marketing(n_rct=10, n_obs=0, n_val=0, n_test=0, n_options=300)
    assert bidfcl.MAX_OPTIONS == 256
