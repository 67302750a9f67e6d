r"""Data-parallel training over ``torch.distributed`` ranks (``torchrun``): where each rank's rows
are, and the few collectives that make per-rank work add up to the single-process step.

A run with P ranks trains on exactly the global batches of the one-process run with the same
seed. Every rank draws the same permutation of the global rows of a split (the loop's
``randperm(N)`` with the epoch's seed), cuts it into the same global batches, and keeps the
members that fall in its own shard (:class:`RowShard`: contiguous rows, rank 0's first). A
loss that is a mean over the global batch is then the sum over ranks of
``(n_local / n_global) * local mean`` (:meth:`Parallel.batch_scale`), so

* prediction-loss steps use :class:`~torch.nn.parallel.DistributedDataParallel` (which averages
  gradients: the scale carries a factor P);
* the RCT-calibrated lam* of a batch is the exact lam* of the union of the ranks' rows
  (:func:`bidfcl.distributed.solve_mckp_rct`), and arm shares (propensities) are global;
* the bridge's hypergradient sums the ranks' gradients and Hessian-vector products
  (:meth:`Parallel.sum_list` as the ``reduce`` of :func:`bidfcl.implicit.hypergradient`), so
  every rank takes the same CG iterations and the same bridge step;
* scaler statistics, the top arm cost, free options, validation and test metrics are global.

With one process (:meth:`Parallel.single`) every collective is the identity and the trainers run
the code they ran before this module existed: the same numbers bit for bit.
"""

from __future__ import annotations

import inspect
import os
import traceback
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = ["Parallel", "RowShard", "ParallelError", "shard_bounds"]


class ParallelError(ValueError):
    """Bad input on one or more ranks of a data-parallel run (raised on every rank)."""


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of rank ``rank`` among ``world``: contiguous, sizes differ by at most one,
    the larger shards first."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


@dataclass(frozen=True)
class RowShard:
    """Which global rows of a split this rank holds: ``segments`` of ``(global_lo, global_hi,
    local_lo)`` (one for a split, one per part for a concatenation such as pooled RCT + OBS)."""

    n_global: int
    segments: tuple

    @staticmethod
    def of(n_global: int, lo: int, hi: int) -> "RowShard":
        return RowShard(n_global, ((lo, hi, 0),))

    @property
    def n_local(self) -> int:
        return sum(h - lo for lo, h, _ in self.segments)

    def local(self, idx: torch.Tensor) -> torch.Tensor:
        """Positions in this rank's rows of the global row numbers ``idx`` it holds, in ``idx``'s order."""
        pos = torch.full_like(idx, -1)
        for lo, hi, at in self.segments:
            inside = (idx >= lo) & (idx < hi)
            pos = torch.where(inside, idx - lo + at, pos)
        return pos[pos >= 0]

    @staticmethod
    def concat(parts: Sequence["RowShard"]) -> "RowShard":
        segs, g, loc = [], 0, 0
        for p in parts:
            segs += [(lo + g, hi + g, at + loc) for lo, hi, at in p.segments]
            g += p.n_global
            loc += p.n_local
        return RowShard(g, tuple(segs))


class Parallel:
    """This process's place in the run: ``rank`` of ``world`` in ``group`` (None: the default group)."""

    def __init__(self, rank: int = 0, world: int = 1, group=None, device: Optional[torch.device] = None):
        self.rank, self.world, self.group = int(rank), int(world), group
        #: where collectives run: the CPU for gloo, the rank's GPU for nccl
        self.comm_device = device if device is not None else torch.device("cpu")
        #: this process joined the default group itself (:meth:`from_environment`): :meth:`close` leaves it
        self.owns_group = False

    @staticmethod
    def single() -> "Parallel":
        return Parallel()

    @staticmethod
    def current(group=None) -> "Parallel":
        """The initialised default (or given) process group, else a group of one."""
        if not (dist.is_available() and dist.is_initialized()):
            return Parallel.single()
        backend = str(dist.get_backend(group)).lower()
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        return Parallel(dist.get_rank(group), dist.get_world_size(group), group, device)

    @staticmethod
    def from_environment(device_spec: str = "auto") -> "Parallel":
        """Join the group ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``
        ...): ``nccl`` when this run trains on CUDA, else ``gloo``. A group of one without them."""
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1 or not dist.is_available():
            return Parallel.single()
        owns = not dist.is_initialized()
        if owns:
            use_cuda = torch.cuda.is_available() and str(device_spec).strip().lower() not in ("cpu",)
            if use_cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % max(torch.cuda.device_count(), 1))
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        par = Parallel.current()
        par.owns_group = owns
        return par

    def close(self) -> None:
        """Leave the default group if :meth:`from_environment` joined it (``destroy_process_group``):
        the backend's threads stop here, not in the interpreter's exit, where a gloo thread still
        running can abort the process after the run has finished. A group the caller made is left
        alone."""
        if self.owns_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def where(self) -> str:
        return f"rank {self.rank} of {self.world}"

    # ------------------------------------------------------------------------------ collectives
    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of ``t`` (a new tensor on ``t``'s device; ``t`` itself when alone)."""
        return self._reduce(t, "SUM")

    def max(self, t: torch.Tensor) -> torch.Tensor:
        """The element-wise largest over ranks of ``t`` (``t`` itself when alone)."""
        return self._reduce(t, "MAX")

    def _reduce(self, t: torch.Tensor, op: str) -> torch.Tensor:
        if not self.active:
            return t

        buf = t.detach().to(self.comm_device).clone()
        dist.all_reduce(buf, op=getattr(dist.ReduceOp, op), group=self.group)
        return buf.to(t.device)

    def sum_list(self, tensors: list) -> list:
        """The sum over ranks of each tensor of a list, in one flattened all-reduce (gradients,
        Hessian-vector products); the list itself when alone."""
        if not self.active or not tensors:
            return tensors

        flat = torch.cat([t.detach().reshape(-1).to(self.comm_device, torch.float64) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        out, at = [], 0
        for t in tensors:
            out.append(flat[at : at + t.numel()].reshape(t.shape).to(t.device, t.dtype))
            at += t.numel()
        return out

    def gather_objects(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order."""
        if not self.active:
            return [obj]

        out = [None] * self.world
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def agree(self, error: Optional[BaseException], what: str) -> None:
        """Raise on EVERY rank when ``error`` happened on any (one all-gather of the messages): a bad
        input on one rank must not leave the others waiting in a collective."""
        if not self.active:
            if error is not None:
                raise error
            return
        messages = self.gather_objects(None if error is None else f"{type(error).__name__}: {error}")
        bad = [(r, m) for r, m in enumerate(messages) if m is not None]
        if not bad:
            return
        if error is not None and len(bad) == 1:
            raise ParallelError(f"bidfcl ({self.where()}): {what} failed on this rank: {error}") from error
        listing = "; ".join(f"rank {r}: {m}" for r, m in bad)
        raise ParallelError(f"bidfcl ({self.where()}): {what} failed on {len(bad)} of {self.world} ranks: {listing}")

    def run_agreed(self, what: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on every rank, then :meth:`agree` on its failure (``fn`` must not
        itself wait on other ranks)."""
        try:
            result, error = fn(*args, **kwargs), None
        except (ValueError, TypeError, OSError, RuntimeError, KeyError) as exc:
            if os.environ.get("BIDFCL_DEBUG"):
                traceback.print_exc()
            result, error = None, exc
        self.agree(error, what)
        return result

    # ------------------------------------------------------------------------------ batches
    def shard(self, n: int, what: str) -> RowShard:
        """This rank's contiguous rows of a split of ``n`` global rows (:func:`shard_bounds`)."""
        if self.active and n < self.world:
            raise ParallelError(
                f"bidfcl ({self.where()}): {what} has {n} rows, fewer than the {self.world} ranks: "
                f"every rank needs at least one row of every split; use fewer processes"
            )
        lo, hi = shard_bounds(n, self.rank, self.world)
        return RowShard.of(n, lo, hi)

    def batch_scale(self, n_local: int, n_global: int, averaged: bool) -> float:
        """The factor that turns a local mean over ``n_local`` rows into this rank's part of the mean
        over the ``n_global`` rows of the global batch: ``n_local / n_global``, times P when the
        gradients are averaged over ranks (DDP). 1 when alone."""
        if not self.active:
            return 1.0
        return (n_local / max(n_global, 1)) * (self.world if averaged else 1)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged over
        ranks during ``backward``), or ``module`` itself when alone. The parameters are equal on every
        rank already (same seed, global scaler): DDP's start-up broadcast keeps them so."""
        if not self.active:
            return module

        ids = [module_device(module).index] if module_device(module).type == "cuda" else None
        # the buffers (the feature scaler) are equal on every rank: no per-forward broadcast
        # (``forward_sync_buffers`` is the newer spelling of ``broadcast_buffers``)
        params = inspect.signature(DistributedDataParallel.__init__).parameters
        no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
        return DistributedDataParallel(module, device_ids=ids, process_group=self.group, **no_sync)


def module_device(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
