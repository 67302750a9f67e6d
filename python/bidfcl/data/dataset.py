"""The dataset type every trainer and metric consumes: uplift rows ``(x, t, revenue, cost)``.

One row per individual: features ``x`` ``[N, F]``, the logged option ``treatment`` (int64 in
``[0, M)``), the observed ``revenue`` and ``cost`` under that option, and, where known, the
probability ``propensity`` ``[N]`` with which the logged option was assigned (``None`` means "a
randomised trial whose propensities are the arm shares", the convention of
:func:`bidfcl.solve_mckp_rct`). Synthetic data also carries the ground truth ``r_true`` /
``c_true`` ``[N, M]``: the expected revenue and cost of every option for every individual.

The tensors may live in memory or be memory-mapped views of ``.npy`` files
(:meth:`UpliftDataset.save` / :meth:`UpliftDataset.open_memmap`) for data larger than memory;
:meth:`UpliftDataset.batches` streams mini-batches from either.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from typing import Iterator, Optional

import numpy as np
import torch

from .. import _validate
from .._ops import MAX_OPTIONS
from ..propensity import row_propensity

__all__ = ["UpliftDataset", "DataError"]


class DataError(ValueError):
    """Raised for data that violates the uplift-row contract (wrong shapes, NaN, bad labels...)."""


_FLOAT_FIELDS = ("x", "revenue", "cost", "propensity", "r_true", "c_true")
_OPTIONAL = ("propensity", "r_true", "c_true")
_FORMAT_VERSION = 1


_BLOCK_ROWS = 1 << 18


def _first_row(t: torch.Tensor, predicate) -> Optional[int]:
    """First row of ``t`` where the elementwise ``predicate`` holds anywhere, or None (blockwise)."""
    for start in range(0, t.shape[0], _BLOCK_ROWS):
        mask = predicate(t[start : start + _BLOCK_ROWS])
        if mask.dim() > 1:
            mask = mask.reshape(mask.shape[0], -1).any(dim=1)
        if bool(mask.any()):
            return start + int(torch.nonzero(mask)[0, 0])
    return None


@dataclass
class UpliftDataset:
    """Uplift rows with optional ground truth. All tensors share the row dimension N.

    Attributes:
        x: ``[N, F]`` float features.
        treatment: ``[N]`` int64 logged option, in ``[0, n_options)``.
        revenue: ``[N]`` observed revenue under the logged option.
        cost: ``[N]`` observed cost under the logged option.
        propensity: ``[N]`` probability of the logged option, or ``None`` (RCT with arm shares).
        r_true, c_true: ``[N, M]`` expected revenue / cost of every option (synthetic data only).
        n_options: M; inferred as ``max(treatment) + 1`` (or from ``r_true``) when not given;
            at most ``bidfcl.MAX_OPTIONS`` (256, the compiled core's limit).

    The constructor checks types, dtypes and shapes (cheap, no pass over the values) and, when M is
    inferred from the labels, that they lie in ``[0, MAX_OPTIONS)``; :meth:`validate` checks the
    values themselves.
    """

    x: torch.Tensor
    treatment: torch.Tensor
    revenue: torch.Tensor
    cost: torch.Tensor
    propensity: Optional[torch.Tensor] = None
    r_true: Optional[torch.Tensor] = None
    c_true: Optional[torch.Tensor] = None
    n_options: Optional[int] = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "n_options" and not (v is None and f.name in _OPTIONAL):
                _validate.tensor(v, f.name, "of an UpliftDataset", error=DataError)
        _validate.treatment(
            self.treatment, "treatment", where="of an UpliftDataset", error=DataError, check_labels=False
        )
        if self.n_options is None:
            if self.r_true is not None and self.r_true.dim() == 2:
                self.n_options = int(self.r_true.shape[1])
            elif self.treatment.numel() > 0:
                i = _validate.first_row((self.treatment < 0) | (self.treatment >= MAX_OPTIONS))
                if i is not None:
                    raise DataError(
                        f"bidfcl.data: expected treatment in [0, {MAX_OPTIONS}) (M = max(treatment) + 1 "
                        f"options, at most bidfcl.MAX_OPTIONS = {MAX_OPTIONS}), got "
                        f"{int(self.treatment[i])} at row {i}"
                    )
                self.n_options = int(self.treatment.max()) + 1
            else:
                self.n_options = 0
        if (
            isinstance(self.n_options, bool)
            or not isinstance(self.n_options, (int, np.integer))
            or not 0 <= int(self.n_options) <= MAX_OPTIONS
        ):
            raise DataError(
                f"bidfcl.data: expected n_options an integer in [0, {MAX_OPTIONS}] "
                f"(bidfcl.MAX_OPTIONS), got {self.n_options!r}"
            )
        self.n_options = int(self.n_options)
        self.validate(check_values=False)

    # ---------------------------------------------------------------------------------- basics
    def __len__(self) -> int:
        return int(self.treatment.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    def tensors(self) -> dict:
        """The non-None tensor fields by name."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                out[f.name] = v
        return out

    def _replace(self, **tensors) -> "UpliftDataset":
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        kw.update(tensors)
        return UpliftDataset(**kw)

    def __repr__(self) -> str:
        extra = [k for k in _OPTIONAL if getattr(self, k) is not None]
        return (
            f"UpliftDataset(n={len(self)}, features={self.n_features}, options={self.n_options}, "
            f"dtype={self.dtype}, device={self.device}, with={extra})"
        )

    # ------------------------------------------------------------------------------ validation
    def validate(
        self, *, nonnegative_cost: bool = True, require_all_arms: bool = False, check_values: bool = True
    ) -> "UpliftDataset":
        """Check the row contract; raise :class:`DataError` saying what was expected and what arrived.

        Shapes and dtypes always; with ``check_values`` also finite values, treatment in
        ``[0, M)``, propensities in ``(0, 1]``, costs ``>= 0`` (``nonnegative_cost``), and with
        ``require_all_arms`` that every one of the M arms has at least one row (an RCT). Returns self.
        """
        n = len(self)
        if self.treatment.dim() != 1:
            raise DataError(f"bidfcl.data: expected treatment of shape [N], got {list(self.treatment.shape)}")
        if self.treatment.dtype != torch.int64:
            raise DataError(f"bidfcl.data: expected treatment of dtype int64, got {self.treatment.dtype}")
        if self.x.dim() != 2 or self.x.shape[0] != n:
            raise DataError(f"bidfcl.data: expected x of shape [N={n}, F], got {list(self.x.shape)}")
        for name in _FLOAT_FIELDS:
            t = getattr(self, name)
            if t is None:
                continue
            if not t.is_floating_point():
                raise DataError(f"bidfcl.data: expected {name} to be a float tensor, got {t.dtype}")
            if t.shape[0] != n:
                raise DataError(f"bidfcl.data: expected {name} with N={n} rows, got shape {list(t.shape)}")
            if name in ("revenue", "cost", "propensity") and t.dim() != 1:
                raise DataError(f"bidfcl.data: expected {name} of shape [N={n}], got {list(t.shape)}")
            if name in ("r_true", "c_true") and (t.dim() != 2 or t.shape[1] != self.n_options):
                raise DataError(
                    f"bidfcl.data: expected {name} of shape [N={n}, M={self.n_options}], got {list(t.shape)}"
                )
        if not check_values:
            return self
        # value checks run over row blocks: whole-tensor predicates such as isfinite allocate
        # temporaries as large as the data (isfinite of float32 [N, F] costs ~5 bytes per value)
        for name in _FLOAT_FIELDS:
            t = getattr(self, name)
            if t is None:
                continue
            i = _first_row(t, lambda b: ~torch.isfinite(b))
            if i is not None:
                raise DataError(f"bidfcl.data: expected finite {name}, got a NaN/Inf value at row {i}")
        m = self.n_options
        i = _first_row(self.treatment, lambda b: (b < 0) | (b >= m))
        if i is not None:
            raise DataError(f"bidfcl.data: expected treatment in [0, {m}), got {int(self.treatment[i])} at row {i}")
        if nonnegative_cost:
            i = _first_row(self.cost, lambda b: b < 0)
            if i is not None:
                raise DataError(f"bidfcl.data: expected non-negative cost, got {float(self.cost[i])} at row {i}")
        if self.propensity is not None:
            i = _first_row(self.propensity, lambda b: (b <= 0) | (b > 1))
            if i is not None:
                raise DataError(
                    f"bidfcl.data: expected propensity in (0, 1], got {float(self.propensity[i])} at row {i}"
                )
        if require_all_arms:
            self.check_arms()
        return self

    def arm_counts(self) -> torch.Tensor:
        """Rows per option, int64 ``[M]`` (labels outside ``[0, M)`` are not counted)."""
        m = self.n_options
        counts = torch.zeros(m + 1, dtype=torch.int64, device=self.treatment.device)
        for start in range(0, len(self), _BLOCK_ROWS):
            b = self.treatment[start : start + _BLOCK_ROWS]
            b = torch.where((b >= 0) & (b < m), b, m)  # out-of-range labels land in a spare bin
            counts += torch.bincount(b, minlength=m + 1)[: m + 1]
        return counts[:m]

    def check_arms(self) -> "UpliftDataset":
        """Raise :class:`DataError` if an arm of the trial has no rows (IPW would divide by zero)."""
        counts = self.arm_counts()
        empty = [j for j in range(self.n_options) if int(counts[j]) == 0]
        if self.n_options == 0 or empty:
            raise DataError(
                f"bidfcl.data: expected every one of the {self.n_options} arms of an RCT to have rows, "
                f"got empty arm(s) {empty} (rows per arm: {counts.tolist()})"
            )
        return self

    def row_propensity(self) -> torch.Tensor:
        """``propensity`` if given (itself), else the arm share ``N_{t_i} / N`` of each row's arm in the
        features' dtype (:func:`bidfcl.propensity.row_propensity` with this dataset's arm counts).

        Raises :class:`DataError` for a label outside ``[0, n_options)`` (no share to look up)."""
        if self.propensity is not None:
            return self.propensity
        m = self.n_options
        i = _first_row(self.treatment, lambda b: (b < 0) | (b >= m))
        if i is not None:
            raise DataError(
                f"bidfcl.data: expected treatment in [0, {m}) to look up its arm share, got "
                f"{int(self.treatment[i])} at row {i}"
            )
        return row_propensity(None, self.treatment, num_options=m, dtype=self.x.dtype, counts=self.arm_counts())

    # --------------------------------------------------------------------------- transformation
    def subset(self, idx) -> "UpliftDataset":
        """Rows ``idx`` (slice, int64 index tensor or bool mask); a slice of in-memory data is a view."""
        if isinstance(idx, np.ndarray):
            idx = torch.from_numpy(idx)
        if isinstance(idx, torch.Tensor) and idx.device != self.treatment.device:
            idx = idx.to(self.treatment.device)
        return self._replace(**{k: v[idx] for k, v in self.tensors().items()})

    def to(self, device=None, dtype: Optional[torch.dtype] = None, non_blocking: bool = False) -> "UpliftDataset":
        """Move to a device and/or cast the float fields to ``dtype`` (treatment stays int64)."""
        out = {}
        for k, v in self.tensors().items():
            if k == "treatment":
                out[k] = v.to(device=device, non_blocking=non_blocking)
            else:
                out[k] = v.to(device=device, dtype=dtype, non_blocking=non_blocking)
        return self._replace(**out)

    def materialize(self) -> "UpliftDataset":
        """A copy with every tensor in ordinary (not memory-mapped) memory."""
        return self._replace(**{k: v.clone() for k, v in self.tensors().items()})

    @staticmethod
    def concat(parts: list["UpliftDataset"]) -> "UpliftDataset":
        """Rows of several datasets with the same fields, in order."""
        if not parts:
            raise DataError("bidfcl.data: concat needs at least one dataset")
        keys = set(parts[0].tensors())
        for p in parts[1:]:
            if set(p.tensors()) != keys:
                raise DataError(
                    f"bidfcl.data: concat expected the same fields, got {sorted(keys)} and {sorted(p.tensors())}"
                )
        m = max(p.n_options for p in parts)
        return UpliftDataset(**{k: torch.cat([p.tensors()[k] for p in parts]) for k in keys}, n_options=m)

    # -------------------------------------------------------------------------------- batching
    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: Optional[torch.Generator] = None,
        drop_last: bool = False,
        device=None,
    ) -> Iterator["UpliftDataset"]:
        """Stream mini-batches as :class:`UpliftDataset` objects of ``batch_size`` rows.

        Without ``shuffle``, batches are consecutive slices (views of in-memory data; memory-mapped
        data is read one batch at a time). With ``shuffle``, a permutation from ``generator`` (a
        ``torch.Generator``; same generator state, same order) picks the rows; indices within a
        batch are sorted so memory-mapped files are read front to back. ``device`` moves each batch.
        """
        if batch_size <= 0:
            raise ValueError(f"bidfcl.data: expected batch_size > 0, got {batch_size}")
        n = len(self)
        perm = torch.randperm(n, generator=generator) if shuffle else None
        stop = (n // batch_size) * batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            end = min(start + batch_size, n)
            if perm is None:
                batch = self.subset(slice(start, end))
            else:
                batch = self.subset(perm[start:end].sort().values)
            yield batch if device is None else batch.to(device)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    # --------------------------------------------------------------------------- memory mapping
    def save(self, directory: str | os.PathLike) -> None:
        """Write every tensor as ``<name>.npy`` plus ``meta.json`` into ``directory`` (created)."""
        os.makedirs(directory, exist_ok=True)
        names = []
        for k, v in self.tensors().items():
            arr = v.detach().cpu()
            if arr.dtype == torch.bfloat16:
                raise DataError("bidfcl.data: save supports float16/32/64 tensors, got bfloat16")
            np.save(os.path.join(directory, f"{k}.npy"), arr.numpy(), allow_pickle=False)
            names.append(k)
        meta = {
            "format": "bidfcl.UpliftDataset",
            "version": _FORMAT_VERSION,
            "n_rows": len(self),
            "n_options": self.n_options,
            "fields": names,
        }
        with open(os.path.join(directory, "meta.json"), "w") as fh:
            json.dump(meta, fh, indent=1)

    @classmethod
    def open_memmap(cls, directory: str | os.PathLike, *, validate: bool = False) -> "UpliftDataset":
        """Open a dataset written by :meth:`save` as memory-mapped tensors (nothing is read up front).

        The arrays are mapped copy-on-write: writes through the tensors never reach the files.
        ``validate=True`` scans every value once (costs a full read).
        """
        meta_path = os.path.join(directory, "meta.json")
        if not os.path.exists(meta_path):
            raise FileNotFoundError(f"bidfcl.data: expected {meta_path} (written by UpliftDataset.save)")
        with open(meta_path) as fh:
            meta = json.load(fh)
        if meta.get("format") != "bidfcl.UpliftDataset":
            raise DataError(f"bidfcl.data: {meta_path} is not a bidfcl.UpliftDataset description")
        tensors = {}
        for k in meta["fields"]:
            arr = np.load(os.path.join(directory, f"{k}.npy"), mmap_mode="c", allow_pickle=False)
            tensors[k] = torch.from_numpy(arr)
        ds = cls(**tensors, n_options=meta["n_options"])
        if len(ds) != meta["n_rows"]:
            raise DataError(f"bidfcl.data: expected {meta['n_rows']} rows in {directory}, got {len(ds)}")
        return ds.validate(check_values=validate)
