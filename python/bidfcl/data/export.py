"""Writing uplift rows to Parquet or CSV tables (the format :func:`bidfcl.data.load_table` reads)."""

from __future__ import annotations

import os
from typing import Optional, Sequence

from .dataset import DataError, UpliftDataset

__all__ = ["write_table", "write_splits"]

#: the table formats by file extension
TABLE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def _pyarrow():
    try:
        import pyarrow as pa  # noqa: PLC0415 (optional dependency (an extra), imported where used)
        import pyarrow.csv as pacsv  # noqa: PLC0415 (optional dependency (an extra), imported where used)
        import pyarrow.parquet as pq  # noqa: PLC0415 (optional dependency (an extra), imported where used)
    except ImportError:
        raise DataError("bidfcl.data: writing Parquet/CSV tables needs pyarrow: pip install 'bidfcl[data]'") from None
    return pa, pacsv, pq


def write_table(
    ds: UpliftDataset, path: str | os.PathLike, *, features: Optional[Sequence[str]] = None, propensity: bool = True
) -> str:
    """Write ``ds`` as one row per user: the feature columns (``features``, default ``f0..f{F-1}``),
    ``treatment``, ``revenue``, ``cost`` and, with ``propensity`` and when ``ds`` has them, ``propensity``.
    The format follows the extension (.parquet, .pq or .csv). Returns the path."""
    path = os.fspath(path)
    fmt = TABLE_FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise DataError(f"bidfcl.data.write_table: expected a .parquet, .pq or .csv path, got {path!r}")
    names = list(features) if features is not None else [f"f{j}" for j in range(ds.n_features)]
    if len(names) != ds.n_features or len(set(names)) != len(names):
        raise DataError(f"bidfcl.data.write_table: expected {ds.n_features} distinct feature names, got {names}")
    reserved = {"treatment", "revenue", "cost", "propensity"} & set(names)
    if reserved:
        raise DataError(f"bidfcl.data.write_table: feature names {sorted(reserved)} clash with the label columns")
    pa, pacsv, pq = _pyarrow()
    x = ds.x.detach().cpu().numpy()
    cols = {n: x[:, j] for j, n in enumerate(names)}
    cols.update(treatment=ds.treatment.cpu().numpy(), revenue=ds.revenue.cpu().numpy(), cost=ds.cost.cpu().numpy())
    if propensity and ds.propensity is not None:
        cols["propensity"] = ds.propensity.cpu().numpy()
    table = pa.table(cols)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)
    return path


def write_splits(
    splits: dict, directory: str | os.PathLike, *, fmt: str = "parquet", features: Optional[Sequence[str]] = None
) -> dict:
    """:func:`write_table` of each ``{name: UpliftDataset}`` as ``directory/<name>.<fmt>``; returns
    ``{name: path}`` (None datasets are skipped)."""
    if fmt not in ("parquet", "csv"):
        raise DataError(f"bidfcl.data.write_splits: expected fmt 'parquet' or 'csv', got {fmt!r}")
    return {
        name: write_table(ds, os.path.join(os.fspath(directory), f"{name}.{fmt}"), features=features)
        for name, ds in splits.items()
        if ds is not None
    }
