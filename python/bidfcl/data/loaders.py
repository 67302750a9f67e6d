"""Loaders for local uplift data files (nothing is downloaded). Need pyarrow (``pip install 'bidfcl[data]'``).

* :func:`load_table`: any Parquet or CSV (optionally gzip/bz2/zstd-compressed) file with a column
  mapping to features, treatment, revenue, cost and optionally propensity.
* :func:`load_criteo_uplift`: CRITEO-UPLIFT v2.1 (13,979,592 rows; columns ``f0..f11, treatment,
  conversion, visit, exposure``) with revenue = conversion, cost = visit, min-max scaled features.

Files are streamed in record batches into preallocated outputs (CSV row count from a fast newline
pre-pass), so peak memory is the output plus a few batches: about 68 bytes per row for 12 float32
features, int64 treatment and float32 revenue/cost.
"""

from __future__ import annotations

import os
import re
from typing import Optional, Sequence

import numpy as np
import torch

from .._ops import MAX_OPTIONS
from .._optional import require
from .dataset import DataError, UpliftDataset

__all__ = ["load_table", "count_rows", "load_criteo_uplift", "CRITEO_FEATURES", "CRITEO_COLUMNS"]

CRITEO_FEATURES = tuple(f"f{k}" for k in range(12))
CRITEO_COLUMNS = CRITEO_FEATURES + ("treatment", "conversion", "visit", "exposure")
# Small read units keep pyarrow's own memory bounded: with 8 MiB CSV blocks the threaded reader's
# read-ahead held ~100 B/row of a 3M-row file at once; 1 MiB blocks stay near 40 MiB in total.
# Parquet is read through a 1 MiB buffered stream without pre-buffering whole row groups.
_CSV_BLOCK_BYTES = 1 << 20
_PARQUET_BATCH_ROWS = 1 << 16


def _pyarrow():
    """pyarrow with its ``csv`` and ``parquet`` modules loaded, or MissingDependencyError naming the
    ``data`` extra (one line, so the CLI can print it as it is)."""
    for name in ("pyarrow.csv", "pyarrow.parquet"):
        require(name, extra="data", feature="reading Parquet/CSV files")
    return require("pyarrow", extra="data", feature="reading Parquet/CSV files")


def _format(path: str, fmt: Optional[str]) -> str:
    if fmt is not None:
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"bidfcl.data: format must be 'csv' or 'parquet', got {fmt!r}")
        return fmt
    name = os.path.basename(str(path)).lower()
    for comp in (".gz", ".bz2", ".zst", ".lz4"):
        if name.endswith(comp):
            name = name[: -len(comp)]
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    raise ValueError(f"bidfcl.data: cannot tell the format of {path!r} from its name; pass format='csv' or 'parquet'")


def _source(path: str, split: Optional[str]) -> str:
    """How messages name the input: the file, and the split it was read for when known."""
    return f"{path} (split {split!r})" if split else str(path)


def _count_csv_rows(path: str) -> int:
    """Data rows of a CSV (newlines minus the header), decompressing on the fly if needed."""
    pa = _pyarrow()
    count, last = 0, b"\n"
    with pa.input_stream(str(path), compression="detect") as stream:
        while True:
            buf = stream.read(16 << 20)
            if not buf:
                break
            count += buf.count(b"\n")
            last = buf[-1:]
    if last != b"\n":
        count += 1
    return max(count - 1, 0)


class _Sink:
    """Preallocated column outputs that grow (rarely) if the row estimate was short."""

    def __init__(self, n: int, n_features: int, dtype: np.dtype, with_propensity: bool):
        self.n, self.cap, self.dtype = 0, max(int(n), 1), dtype
        self.x = np.empty((self.cap, n_features), dtype=dtype)
        self.t = np.empty(self.cap, dtype=np.int64)
        self.rev = np.empty(self.cap, dtype=dtype)
        self.cost = np.empty(self.cap, dtype=dtype)
        self.prop = np.empty(self.cap, dtype=dtype) if with_propensity else None
        self.fmin = np.full(n_features, np.inf)
        self.fmax = np.full(n_features, -np.inf)

    def _grow(self, need: int) -> None:
        cap = max(need, int(self.cap * 1.25) + 1)
        for name in ("x", "t", "rev", "cost", "prop"):
            arr = getattr(self, name)
            if arr is not None:
                new = np.empty((cap,) + arr.shape[1:], dtype=arr.dtype)
                new[: self.n] = arr[: self.n]
                setattr(self, name, new)
        self.cap = cap

    def reserve(self, k: int) -> slice:
        if self.n + k > self.cap:
            self._grow(self.n + k)
        sl = slice(self.n, self.n + k)
        self.n += k
        return sl

    def finish(self) -> None:
        for name in ("x", "t", "rev", "cost", "prop"):
            arr = getattr(self, name)
            if arr is not None:
                setattr(self, name, arr[: self.n])


def _column_numpy(batch, name: str, row0: int, src: str) -> np.ndarray:
    """One column of a record batch as float64 numpy, with null / non-numeric checks."""
    pa = _pyarrow()
    col = batch.column(batch.schema.get_field_index(name))
    typ = col.type
    if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ) or pa.types.is_null(typ)):
        raise DataError(f"bidfcl.data: expected a numeric column {name!r} in {src}, got type {typ}")
    if col.null_count:
        i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(
            f"bidfcl.data: expected no missing values in column {name!r} of {src}, "
            f"got an empty/null value at data row {row0 + i}"
        )
    arr = col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"bidfcl.data: expected finite values in column {name!r} of {src}, got {arr[i]} at data row {row0 + i}"
        )
    return arr


def _first_bad(mask: np.ndarray, values: np.ndarray, row0: int, src: str, expected: str) -> None:
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        v = values[i]
        shown = int(v) if float(v).is_integer() else float(v)
        raise DataError(f"bidfcl.data: expected {expected} in {src}, got {shown} at data row {row0 + i}")


def _check_columns(available: Sequence[str], wanted: Sequence[str], src: str) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        raise DataError(f"bidfcl.data: expected columns {missing} in {src}, not found; available: {list(available)}")


def count_rows(path: str | os.PathLike, *, format: Optional[str] = None) -> int:
    """Data rows of a Parquet (from its footer) or CSV file (one pass counting newlines), e.g. to
    divide a file among the ranks of a data-parallel run before anyone reads it."""
    _pyarrow()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"bidfcl.data: no such file {path} (loaders read local files only)")
    fmt = _format(path, format)
    if fmt == "parquet":
        pa = _pyarrow()
        try:
            return int(pa.parquet.ParquetFile(path).metadata.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(
                f"bidfcl.data: could not read {path} as Parquet (corrupted, truncated or not a Parquet file): {exc}"
            ) from None
    return _count_csv_rows(path)


def _batches(path: str, fmt: str, columns: list[str], n_rows: Optional[int], src: str, rows=None):
    """(estimated row count, iterator of record batches with exactly ``columns``). With ``rows =
    (lo, hi)`` a Parquet file is read from the first row group that holds row ``lo`` to the last
    that holds row ``hi - 1`` only (the caller cuts the batches to the range; see :func:`_in_range`).

    Every pyarrow failure (a corrupted or truncated file, a cell that is not a number) becomes a
    :class:`DataError` naming ``src`` (the file and its split) and, where known, column and row."""
    pa = _pyarrow()
    if fmt == "parquet":
        try:
            pf = pa.parquet.ParquetFile(str(path), buffer_size=1 << 20, pre_buffer=False)
            names, num_rows = pf.schema_arrow.names, pf.metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise DataError(
                f"bidfcl.data: could not read {src} as Parquet (corrupted, truncated or not a Parquet file): {exc}"
            ) from None
        _check_columns(names, columns, src)

        groups, row0 = None, 0
        if rows is not None:
            lo, hi = rows
            groups, at = [], 0
            for g in range(pf.metadata.num_row_groups):
                k = pf.metadata.row_group(g).num_rows
                if at < hi and at + k > lo:
                    if not groups:
                        row0 = at
                    groups.append(g)
                at += k
        first_row = row0

        def parquet_gen():
            it = pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns, use_threads=False, row_groups=groups)
            row0 = first_row
            while True:
                try:
                    batch = next(it)
                except StopIteration:
                    return
                except (pa.ArrowException, OSError) as exc:
                    raise DataError(
                        f"bidfcl.data: could not read {src} as Parquet after data row {row0} "
                        f"(corrupted or truncated file): {exc}"
                    ) from None
                yield row0, batch
                row0 += batch.num_rows

        return (num_rows if rows is None else rows[1] - rows[0]), parquet_gen()
    # CSV: read the header first to report missing columns by name, then stream with fixed types
    import pyarrow.csv as pacsv  # noqa: PLC0415 (optional dependency (an extra), imported where used)

    read = pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES)
    try:
        reader = pacsv.open_csv(str(path), read_options=read)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"bidfcl.data: could not read {src} as CSV: {exc}") from None
    names = reader.schema.names
    del reader
    _check_columns(names, columns, src)
    convert = pacsv.ConvertOptions(
        include_columns=columns, column_types={c: pa.float64() for c in columns}, strings_can_be_null=False
    )

    def not_numeric(exc) -> DataError:
        return DataError(
            f"bidfcl.data: expected numeric values in {src}: {_locate_csv_cell(path, names, columns, str(exc))}"
        )

    try:
        reader = pacsv.open_csv(str(path), read_options=read, convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise not_numeric(exc) from None
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"bidfcl.data: could not read {src} as CSV: {exc}") from None
    estimate = rows[1] - rows[0] if rows is not None else n_rows if n_rows is not None else _count_csv_rows(path)

    def gen():
        row0 = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise not_numeric(exc) from None
            except (pa.ArrowException, OSError) as exc:
                raise DataError(f"bidfcl.data: could not read {src} as CSV: {exc}") from None
            yield row0, batch
            row0 += batch.num_rows
            if rows is not None and row0 >= rows[1]:
                return  # past this rank's rows: the rest of the file is someone else's

    return estimate, gen()


def _in_range(batches, rows):
    """``(row0, batch)`` cut to the data rows ``[lo, hi)`` (all with ``rows=None``); ``row0`` is the
    number of the batch's first row in the whole file (error messages name it)."""
    for row0, batch in batches:
        if rows is None:
            yield row0, batch
            continue
        a, b = max(rows[0] - row0, 0), min(rows[1] - row0, batch.num_rows)
        if b > a:
            yield row0 + a, batch.slice(a, b - a)


def _locate_csv_cell(path: str, names: Sequence[str], columns: Sequence[str], message: str) -> str:
    """pyarrow's CSV conversion error names the column by its index only: find the column name,
    the first cell of it that is not a number and its data row (an error-path rescan of that column)."""
    import pyarrow as pa  # noqa: PLC0415 (optional dependency (an extra), imported where used)
    import pyarrow.csv as pacsv  # noqa: PLC0415 (optional dependency (an extra), imported where used)

    found = re.search(r"CSV column #(\d+)", message)
    if not found or int(found.group(1)) >= len(names):
        return message
    name = names[int(found.group(1))]
    if name not in columns:
        return message
    try:
        reader = pacsv.open_csv(
            str(path),
            read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
            convert_options=pacsv.ConvertOptions(
                include_columns=[name], column_types={name: pa.string()}, strings_can_be_null=False
            ),
        )
        row0 = 0
        for batch in reader:
            cells = batch.column(0).to_pylist()
            try:
                np.asarray(cells, dtype=np.float64)
            except ValueError:
                for i, cell in enumerate(cells):
                    try:
                        float(cell)
                    except (TypeError, ValueError):
                        shown = "an empty cell" if cell in ("", None) else repr(cell)
                        return f"column {name!r} holds {shown} at data row {row0 + i}, not a number"
            row0 += batch.num_rows
    except (pa.ArrowException, OSError):
        pass
    return f"column {name!r}: {message}"


def load_table(
    path: str | os.PathLike,
    features: Sequence[str],
    treatment: str,
    revenue: str,
    cost: str,
    propensity: Optional[str] = None,
    *,
    format: Optional[str] = None,
    n_options: Optional[int] = None,
    dtype: torch.dtype = torch.float32,
    scale: Optional[str] = None,
    nonnegative_cost: bool = True,
    require_all_arms: bool = False,
    n_rows: Optional[int] = None,
    split: Optional[str] = None,
    rows: Optional[tuple[int, int]] = None,
) -> UpliftDataset:
    """Load uplift rows from a local Parquet or CSV file through pyarrow, with a column mapping.

    Args:
        path: ``.parquet``/``.pq`` or ``.csv`` (optionally ``.gz``/``.bz2``/``.zst``) file; ``format``
            overrides the guess from the name.
        features: feature column names (in this order -> ``x`` ``[N, F]``).
        treatment: column of the logged option (integers in ``[0, n_options)``).
        revenue, cost: observed outcome columns. propensity: optional column of P(logged option).
        n_options: M (default: largest treatment + 1), at most ``bidfcl.MAX_OPTIONS`` (256, the
            compiled core's limit); a treatment at or above the limit is rejected while reading,
            naming its row, so a typo such as ``1e12`` cannot ask for 10^12 options.
        dtype: float dtype of ``x``/revenue/cost/propensity (treatment is int64).
        scale: None or ``"minmax"`` (each feature mapped to [0, 1]; constant features to 0).
        nonnegative_cost: reject negative costs. require_all_arms: reject an empty arm (an RCT).
        n_rows: optional row count hint for CSV (skips the newline-counting pre-pass).
        split: the split this file is read for (``"obs"``, ``"rct"``, ``"val"``, ``"test"``), named
            in every error message next to the file.
        rows: ``(lo, hi)``: only data rows ``lo <= row < hi`` (a rank's shard, see
            :func:`count_rows`); Parquet row groups outside them are not read, a CSV is read up to
            row ``hi``. Errors still name rows by their number in the whole file; M (default),
            ``require_all_arms`` and ``scale`` then see these rows only.

    Raises:
        DataError: a corrupted or unreadable file, missing columns, non-numeric / missing / NaN /
            Inf values, non-integer or out-of-range treatment (also >= MAX_OPTIONS), negative
            cost, propensity outside (0, 1], empty arm. Each names the file and split, the column
            and the data row (0-based, header excluded) where known.
    """
    _pyarrow()
    path = os.fspath(path)
    src = _source(path, split)
    if not os.path.exists(path):
        raise FileNotFoundError(f"bidfcl.data: no such file {src} (loaders read local files only)")
    if os.path.isdir(path):
        raise DataError(f"bidfcl.data: expected a Parquet or CSV file, got a directory: {src}")
    if n_options is not None and (
        isinstance(n_options, bool) or not isinstance(n_options, int) or not 1 <= n_options <= MAX_OPTIONS
    ):
        raise ValueError(
            f"bidfcl.data: n_options must be an integer in [1, {MAX_OPTIONS}] (bidfcl.MAX_OPTIONS), got {n_options!r}"
        )
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"bidfcl.data: dtype must be torch.float32 or torch.float64, got {dtype}")
    if scale not in (None, "minmax"):
        raise ValueError(f"bidfcl.data: scale must be None or 'minmax', got {scale!r}")
    features = list(features)
    if not features:
        raise ValueError("bidfcl.data: expected at least one feature column")
    fmt = _format(path, format)
    columns = list(dict.fromkeys(features + [treatment, revenue, cost] + ([propensity] if propensity else [])))
    if rows is not None:
        if not (
            isinstance(rows, tuple)
            and len(rows) == 2
            and all(isinstance(v, int) for v in rows)
            and 0 <= rows[0] <= rows[1]
        ):
            raise ValueError(f"bidfcl.data: rows must be a pair of integers (lo, hi) with 0 <= lo <= hi, got {rows!r}")
    estimate, batches = _batches(path, fmt, columns, n_rows, src, rows)
    npdt = np.float32 if dtype == torch.float32 else np.float64
    sink = _Sink(estimate, len(features), npdt, propensity is not None)
    t_max = -1
    arm_counts = np.zeros(n_options or 0, dtype=np.int64)
    for row0, batch in _in_range(batches, rows):
        k = batch.num_rows
        if k == 0:
            continue
        sl = sink.reserve(k)
        for j, name in enumerate(features):
            sink.x[sl, j] = _column_numpy(batch, name, row0, src)
            stored = sink.x[sl, j]  # range of the stored (rounded) values: same result for every format
            sink.fmin[j] = min(sink.fmin[j], float(stored.min()))
            sink.fmax[j] = max(sink.fmax[j], float(stored.max()))
        t = _column_numpy(batch, treatment, row0, src)
        frac = t != np.round(t)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise DataError(
                f"bidfcl.data: expected integer treatment in column {treatment!r} of {src}, "
                f"got {t[i]} at data row {row0 + i}"
            )
        limit = MAX_OPTIONS if n_options is None else n_options
        why = f"at most bidfcl.MAX_OPTIONS = {MAX_OPTIONS} options" if n_options is None else f"n_options = {n_options}"
        _first_bad((t < 0) | (t >= limit), t, row0, src, f"treatment in [0, {limit}) ({why}) in column {treatment!r}")
        sink.t[sl] = t
        t_max = max(t_max, int(t.max()))
        arm_counts += np.bincount(sink.t[sl], minlength=len(arm_counts))[: len(arm_counts)] if n_options else 0
        sink.rev[sl] = _column_numpy(batch, revenue, row0, src)
        c = _column_numpy(batch, cost, row0, src)
        if nonnegative_cost:
            _first_bad(c < 0, c, row0, src, f"non-negative cost in column {cost!r}")
        sink.cost[sl] = c
        if propensity:
            p = _column_numpy(batch, propensity, row0, src)
            _first_bad((p <= 0) | (p > 1), p, row0, src, f"propensity in (0, 1] in column {propensity!r}")
            sink.prop[sl] = p
    sink.finish()
    m = n_options if n_options is not None else t_max + 1
    if require_all_arms:
        counts = arm_counts if n_options else np.bincount(sink.t, minlength=m)
        empty = [j for j in range(m) if counts[j] == 0]
        if m == 0 or empty:
            raise DataError(
                f"bidfcl.data: expected every one of the {m} arms of an RCT in {src} to have rows, "
                f"got empty arm(s) {empty} (rows per arm: {counts.tolist()})"
            )
    if scale == "minmax" and sink.n:
        span = sink.fmax - sink.fmin
        inv = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 0.0).astype(npdt)
        lo = sink.fmin.astype(npdt)
        step = 1 << 18
        for s in range(0, sink.n, step):  # in place, block by block: no full-size temporaries
            blk = sink.x[s : s + step]
            blk -= lo
            blk *= inv
            np.clip(blk, 0.0, 1.0, out=blk)  # rounding may leave 1 + ulp
    ds = UpliftDataset(
        x=torch.from_numpy(sink.x),
        treatment=torch.from_numpy(sink.t),
        revenue=torch.from_numpy(sink.rev),
        cost=torch.from_numpy(sink.cost),
        propensity=None if sink.prop is None else torch.from_numpy(sink.prop),
        n_options=m,
    )
    # values were checked batch by batch above (in numpy, while reading); shapes/dtypes here
    return ds.validate(check_values=False)


def load_criteo_uplift(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    scale: bool = True,
    format: Optional[str] = None,
    n_rows: Optional[int] = None,
    split: Optional[str] = None,
) -> UpliftDataset:
    """Load CRITEO-UPLIFT v2.1 from a local file (``criteo-uplift-v2.1.csv.gz``, a CSV or a Parquet copy).

    Schema-checked: columns ``f0..f11, treatment, conversion, visit, exposure`` must all be present
    (``exposure`` is checked but not returned). Two options (0 = control, 1 = treated):
    revenue = ``conversion``, cost = ``visit``; features min-max scaled to [0, 1] when ``scale``.
    ``propensity`` is None: the trial's arm shares (about 85% treated) serve as propensities.
    Both arms must be non-empty. Peak memory is about 68 bytes per row plus a few read batches
    (float32): about 0.95 GB of output for the 13,979,592 rows.

    The file is not downloaded: obtain it from the Criteo AI Lab website (see the README).
    """
    _pyarrow()
    path = os.fspath(path)
    src = _source(path, split)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"bidfcl.data: no such file {src}; download criteo-uplift-v2.1.csv.gz "
            "from the Criteo AI Lab website (bidfcl never downloads data)"
        )
    fmt = _format(path, format)
    # schema check over every documented column, including exposure, before reading any rows
    _check_schema(path, fmt, CRITEO_COLUMNS, src)
    ds = load_table(
        path,
        CRITEO_FEATURES,
        "treatment",
        "conversion",
        "visit",
        format=fmt,
        n_options=2,
        dtype=dtype,
        scale="minmax" if scale else None,
        require_all_arms=True,
        n_rows=n_rows,
        split=split,
    )
    return ds


def _check_schema(path: str, fmt: str, columns: Sequence[str], src: str) -> None:
    pa = _pyarrow()
    if os.path.isdir(path):
        raise DataError(f"bidfcl.data: expected a Parquet or CSV file, got a directory: {src}")
    if fmt == "parquet":
        try:
            names = pa.parquet.ParquetFile(str(path)).schema_arrow.names
        except (pa.ArrowException, OSError) as exc:
            raise DataError(
                f"bidfcl.data: could not read {src} as Parquet (corrupted, truncated or not a Parquet file): {exc}"
            ) from None
    else:
        import pyarrow.csv as pacsv  # noqa: PLC0415 (optional dependency (an extra), imported where used)

        try:
            reader = pacsv.open_csv(str(path), read_options=pacsv.ReadOptions(block_size=1 << 16))
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"bidfcl.data: could not read {src} as CSV: {exc}") from None
        names = reader.schema.names
        del reader
    _check_columns(names, columns, src)
