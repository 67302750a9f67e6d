"""Out-of-core ``bidfcl allocate``: score a Parquet/CSV file chunk by chunk and allocate exactly.

Two passes over the users, with memory bounded by the chunk size (never the file size):

1. read ``chunk_rows`` rows at a time, score them with the model (``r_hat``, ``c_hat >= 0``), append
   the predictions to a temporary spill file (``2 x rows x M`` floats on disk, read back by chunk), and
   note the chunk's cheapest-policy spend and breakpoint range;
2. find the exact cut of :func:`bidfcl.solve_mckp` over all rows with the sharded selection of
   :mod:`bidfcl._sharded` (each chunk is one segment; each round re-reads the spill one chunk at a
   time), then read the spill once more, apply the cut per chunk and write the plan incrementally
   (``ParquetWriter`` / ``CSVWriter``).

The plan equals the in-memory command's (same option per user, same totals up to summation
order): the chunks score the same rows in the same blocks of the model's ``predict`` (chunk sizes
are rounded up to a multiple of its 65,536-row block for that), and the cut is the single-process
one.

Under ``torchrun`` (``WORLD_SIZE > 1``; Parquet input) rank ``r`` takes the ``r``-th contiguous
range of rows (range bounds on 65,536-row blocks), the selection all-reduces across ranks, and
each rank writes ITS part of the plan to ``<stem>.rank<r>-of-<P><ext>`` next to ``output``
(rows in file order; concatenating the parts in rank order gives the whole plan).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from . import _reference, solver
from ._ops import ops
from ._sharded import Comm, LocalComm, Segment, bp_keys, select_cuts

__all__ = ["allocate_file", "StreamingInputError", "PREDICT_BLOCK", "DEFAULT_CHUNK_ROWS"]

#: rows per ``MultiHeadMLP.predict`` block (its default batch size)
PREDICT_BLOCK = 65536
DEFAULT_CHUNK_ROWS = 1_000_000
#: bins and candidate cap of the selection: every round re-reads the spill, so rounds are costly
NUM_BINS = 65536
CANDIDATE_CAP = 65536
_SEG_SHIFT = 32  # segment ordinal = rank << 32 | chunk: row order across ranks, then chunks


class StreamingInputError(ValueError):
    """The input file cannot be allocated (unreadable, empty, missing or bad feature columns)."""

    def __init__(self, message: str, about_columns: bool = False):
        super().__init__(message)
        self.about_columns = about_columns


def effective_chunk_rows(chunk_rows: int) -> int:
    """Chunk size actually used: ``chunk_rows`` rounded up to whole blocks of the model's predict.

    The in-memory command scores rows in blocks of ``PREDICT_BLOCK``; a matrix product of another
    batch shape may round differently, so chunks hold whole blocks and score them the same way.
    """
    if chunk_rows < 1:
        raise ValueError(f"bidfcl: chunk_rows must be >= 1, got {chunk_rows}")
    return -(-chunk_rows // PREDICT_BLOCK) * PREDICT_BLOCK


# --------------------------------------------------------------------------------------------------
# reading: fixed-size chunks of the needed columns
# --------------------------------------------------------------------------------------------------


def _pyarrow():
    try:
        import pyarrow as pa  # noqa: PLC0415 (optional dependency (an extra), imported where used)
        import pyarrow.csv as pacsv  # noqa: PLC0415 (optional dependency (an extra), imported where used)
        import pyarrow.parquet as pq  # noqa: PLC0415 (optional dependency (an extra), imported where used)
    except ImportError:
        raise StreamingInputError(
            "reading Parquet/CSV needs pyarrow: pip install 'bidfcl[data]' (or pyarrow)"
        ) from None
    return pa, pacsv, pq


def _is_parquet(path: str) -> bool:
    return path.lower().endswith((".parquet", ".pq"))


def _rebatch(batches, rows: int):
    """Tables of exactly ``rows`` rows (the last one shorter) from a stream of record batches."""
    pa = _pyarrow()[0]
    pending, have = [], 0
    for b in batches:
        while b.num_rows:
            take = min(rows - have, b.num_rows)
            pending.append(b.slice(0, take))
            have += take
            b = b.slice(take)
            if have == rows:
                yield pa.Table.from_batches(pending)
                pending, have = [], 0
    if have:
        yield pa.Table.from_batches(pending)


def _open(path: str, columns: list[str], row_range: tuple[int, int] | None, chunk_rows: int, label: str = "input"):
    """Chunks (pyarrow tables with ``columns``) of the rows in ``row_range`` (None: all)."""
    pa, pacsv, pq = _pyarrow()
    try:
        if _is_parquet(path):
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            if pf.metadata.num_rows == 0:
                raise StreamingInputError(f"{label} {path!r} has no rows (columns {names}): nothing to allocate")
            missing = [c for c in columns if c not in names]
            if missing:
                raise StreamingInputError(f"{path} lacks feature column(s) {missing} (has {names})", True)
            if row_range is None:
                yield from _rebatch(pf.iter_batches(batch_size=min(chunk_rows, 1 << 16), columns=columns), chunk_rows)
                return
            lo, hi = row_range
            groups, start, first = [], 0, None
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if start + n > lo and start < hi:
                    groups.append(g)
                    first = start if first is None else first
                start += n
            if not groups:
                return

            def sliced():
                pos = first
                for b in pf.iter_batches(batch_size=1 << 16, row_groups=groups, columns=columns):
                    a, z = max(lo - pos, 0), min(hi - pos, b.num_rows)
                    if z > a:
                        yield b.slice(a, z - a)
                    pos += b.num_rows

            yield from _rebatch(sliced(), chunk_rows)
            return
        conv = pacsv.ConvertOptions(include_columns=columns)
        reader = pacsv.open_csv(path, convert_options=conv)
        missing = [c for c in columns if c not in reader.schema.names]
        if missing:
            raise StreamingInputError(f"{path} lacks feature column(s) {missing} (has {reader.schema.names})", True)
        yield from _rebatch(reader, chunk_rows)
    except (OSError, pa.ArrowException) as exc:
        kind = "Parquet" if _is_parquet(path) else "CSV"
        raise StreamingInputError(f"cannot read {label} {path!r} as {kind}: {str(exc).splitlines()[0][:200]}") from None


def _features(table, columns: list[str], path: str, row0: int) -> torch.Tensor:
    """float64 [rows, F] feature matrix of a chunk, with the in-memory command's checks."""
    cols = []
    for c in columns:
        col = table.column(c).to_numpy(zero_copy_only=False)
        if not np.issubdtype(col.dtype, np.number) and col.dtype != np.bool_:
            raise StreamingInputError(f"expected numeric column {c!r} in {path}, got {col.dtype}", True)
        col = col.astype(np.float64)
        bad = ~np.isfinite(col)
        if bad.any():
            raise StreamingInputError(
                f"column {c!r} of {path} has missing or non-finite values "
                f"(first at row {row0 + int(np.flatnonzero(bad)[0])})",
                True,
            )
        cols.append(col)
    x = np.stack(cols, axis=1) if cols else np.zeros((table.num_rows, 0))
    return torch.from_numpy(x)


# --------------------------------------------------------------------------------------------------
# the spill: predictions of every local row, on disk
# --------------------------------------------------------------------------------------------------


@dataclass
class _Spill:
    folder: str
    m: int = 0
    dtype: torch.dtype = torch.float32
    bounds: list = field(default_factory=list)  # [(start, end)] local rows of each chunk
    files: dict = field(default_factory=dict)

    def append(self, r: torch.Tensor, c: torch.Tensor) -> None:
        start = self.bounds[-1][1] if self.bounds else 0
        self.m, self.dtype = r.shape[1], r.dtype
        for name, t in (("r", r), ("c", c)):
            fh = self.files.get(name)
            if fh is None:
                fh = self.files[name] = open(os.path.join(self.folder, f"{name}.bin"), "wb")
            fh.write(t.contiguous().numpy().tobytes())
        self.bounds.append((start, start + r.shape[0]))

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()

    def chunk(self, q: int) -> tuple[torch.Tensor, torch.Tensor]:
        # plain reads, not a memory map: mapped pages of the whole spill would count in the RSS
        a, b = self.bounds[q]
        np_dtype = np.float32 if self.dtype == torch.float32 else np.float64
        size = np.dtype(np_dtype).itemsize
        out = []
        for name in ("r", "c"):
            arr = np.fromfile(
                os.path.join(self.folder, f"{name}.bin"),
                dtype=np_dtype,
                count=(b - a) * self.m,
                offset=a * self.m * size,
            )
            out.append(torch.from_numpy(arr.reshape(b - a, self.m)))
        return out[0], out[1]


def _events(r: torch.Tensor, c: torch.Tensor, ordinal: int) -> tuple[Segment, float]:
    bp, ids, delta, base = ops.mckp_events(r, c, None, None)
    return Segment(ordinal, bp_keys(bp), ids, delta), float(base)


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------


def _group_comm():
    if not (dist.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1):
        return LocalComm() if not (dist.is_available() and dist.is_initialized()) else Comm()
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return Comm()


def _part_path(output: str, rank: int, size: int) -> str:
    if size == 1:
        return output
    stem, ext = os.path.splitext(output)
    return f"{stem}.rank{rank}-of-{size}{ext}"


def allocate_file(
    model,
    input_path: str,
    output_path: str,
    features: list[str],
    *,
    budget: float | None = None,
    total_budget: float | None = None,
    id_column: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    spill_dir: str | None = None,
    comm=None,
    label: str = "input",
) -> dict:
    """Allocate a budget over the users of a Parquet/CSV file in bounded memory; write the plan.

    Args:
        model: a fitted :class:`bidfcl.models.MultiHeadMLP` (``predict(x) -> r_hat, c_hat``).
        features: the feature columns, in the model's order.
        budget / total_budget: exactly one: per capita (times the number of users) or total.
        id_column: a column copied to the plan (else the plan gets the global ``row`` index).
        chunk_rows: rows per chunk (see :func:`effective_chunk_rows`): peak memory is about
            ``chunk_rows x (8 F + 40 M)`` bytes, plus the model.
        spill_dir: folder for the temporary predictions (default: the output's folder); removed after.
        comm: a ``_sharded`` communicator (default: the torchrun group when ``WORLD_SIZE > 1``).
        label: how error messages name the input (the CLI says ``--input``).

    Returns:
        a summary: ``n``, ``total_budget``, ``lam``, ``spend``, ``value``, ``counts`` (users per
        option), ``outputs`` (plan files written by this rank), ``chunks``, ``stats``.

    The plan has the columns of the in-memory command: the id column (or ``row``), ``option``,
    ``expected_revenue`` and ``expected_spend`` (float64 ``r_hat`` / ``c_hat`` of the option).
    """
    if (budget is None) == (total_budget is None):
        raise ValueError("bidfcl: give exactly one of budget (per capita) or total_budget")
    chunk = effective_chunk_rows(int(chunk_rows))
    pa, pacsv, pq = _pyarrow()
    comm = comm if comm is not None else _group_comm()
    row_range = None
    if comm.size > 1:
        if not _is_parquet(input_path):
            raise StreamingInputError(
                f"{input_path}: under torchrun the input must be Parquet (ranks read row ranges "
                f"of it); convert the CSV first"
            )
        n_all = pq.ParquetFile(input_path).metadata.num_rows
        blocks = -(-n_all // PREDICT_BLOCK)
        lo = min(n_all, (blocks * comm.rank // comm.size) * PREDICT_BLOCK)
        hi = min(n_all, (blocks * (comm.rank + 1) // comm.size) * PREDICT_BLOCK)
        row_range = (lo, hi)
    row0 = row_range[0] if row_range else 0
    folder = tempfile.mkdtemp(prefix="bidfcl-spill-", dir=spill_dir or os.path.dirname(os.path.abspath(output_path)))
    try:
        # pass 1: score, spill, and the chunks' base spend and key ranges
        spill = _Spill(folder)
        base_local, kmin_local, kmax_local = 0.0, 2**62, -1
        dtype = model.mean.dtype
        for table in _open(input_path, features, row_range, chunk, label):
            start = row0 + (spill.bounds[-1][1] if spill.bounds else 0)
            x = _features(table, features, input_path, start).to(dtype)
            r_hat, c_hat = model.predict(x, batch_size=PREDICT_BLOCK)
            c_hat = c_hat.clamp_min(0.0)
            spill.append(r_hat, c_hat)
            seg, base = _events(r_hat, c_hat, 0)
            base_local += base
            if seg.key.numel():
                kmin_local, kmax_local = min(kmin_local, int(seg.key.min())), max(kmax_local, int(seg.key.max()))
        spill.close()
        n_local = spill.bounds[-1][1] if spill.bounds else 0
        header = comm.all_reduce(torch.tensor([n_local, kmax_local, -kmin_local], dtype=torch.int64), op="max")
        n_total = int(comm.all_reduce(torch.tensor([n_local], dtype=torch.int64))[0])
        if n_total == 0:
            raise StreamingInputError(f"{label} {input_path!r} has no rows: nothing to allocate")
        kmax, kmin = int(header[1]), -int(header[2])
        base = float(comm.all_reduce(torch.tensor([base_local], dtype=torch.float64))[0])
        total = float(total_budget) if total_budget is not None else float(budget) * n_total
        like = torch.zeros(1, dtype=dtype)
        budgets = _reference.budget_limit(solver._budgets(total, like)[0])  # what the selection compares against
        rank_bits = comm.rank << _SEG_SHIFT

        def segments():
            for q in range(len(spill.bounds)):
                yield _events(*spill.chunk(q), rank_bits | q)[0]

        sel: dict = {}
        (cut,) = select_cuts(
            segments,
            comm,
            budgets.tolist(),
            base,
            kmin,
            kmax,
            monotone=True,
            nbins=NUM_BINS,
            cap=CANDIDATE_CAP,
            stats=sel,
        )

        # pass 2: choices per chunk, plan written incrementally
        out_path = _part_path(output_path, comm.rank, comm.size)
        ids = _open(input_path, [id_column], row_range, chunk, label) if id_column else None
        writer = None
        spend = value = lagr = 0.0
        counts = torch.zeros(spill.m, dtype=torch.int64)
        fmt = "parquet" if _is_parquet(out_path) else "csv"
        try:
            for q, (a, b) in enumerate(spill.bounds):
                r, c = spill.chunk(q)
                lam, ind, stp = cut.local(rank_bits | q, spill.m, r.dtype)
                choice, s_, v_, l_ = ops.apply_mckp_cut(r, c, lam.reshape(1), torch.tensor([ind]), torch.tensor([stp]))
                choice = choice[0]
                spend, value, lagr = spend + float(s_[0]), value + float(v_[0]), lagr + float(l_[0])
                counts += torch.bincount(choice, minlength=spill.m)
                rows = torch.arange(b - a)
                cols = {}
                if ids is not None:
                    cols[id_column] = next(ids).column(id_column)
                else:
                    cols["row"] = pa.array(np.arange(row0 + a, row0 + b, dtype=np.int64))
                cols["option"] = pa.array(choice.numpy())
                cols["expected_revenue"] = pa.array(r[rows, choice].to(torch.float64).numpy())
                cols["expected_spend"] = pa.array(c[rows, choice].to(torch.float64).numpy())
                part = pa.table(cols)
                if writer is None:
                    writer = (
                        pq.ParquetWriter(out_path, part.schema)
                        if fmt == "parquet"
                        else pacsv.CSVWriter(out_path, part.schema)
                    )
                writer.write_table(part.cast(writer.schema) if fmt == "parquet" else part)
            if writer is None:  # an empty rank still writes its (empty) part
                empty = pa.table(
                    {
                        (id_column or "row"): pa.array([], pa.int64()),
                        "option": pa.array([], pa.int64()),
                        "expected_revenue": pa.array([], pa.float64()),
                        "expected_spend": pa.array([], pa.float64()),
                    }
                )
                (pq.write_table if fmt == "parquet" else pacsv.write_csv)(empty, out_path)
        finally:
            if writer is not None:
                writer.close()
        totals = comm.all_reduce(torch.tensor([spend, value], dtype=torch.float64))
        counts = comm.all_reduce(counts)
        stats = {
            "bytes": comm.bytes,
            "collectives": comm.collectives,
            "rounds": sel.get("rounds", 0),
            "ranks": comm.size,
        }
        return {
            "n": n_total,
            "total_budget": total,
            "lam": float(cut.lam(dtype)),
            "feasible": cut.kind != "infeasible",
            "spend": float(totals[0]),
            "value": float(totals[1]),
            "counts": counts.tolist(),
            "outputs": [out_path],
            "chunks": len(spill.bounds),
            "chunk_rows": chunk,
            "stats": stats,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
