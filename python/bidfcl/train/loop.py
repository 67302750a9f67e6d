"""The loop every trainer shares: phases of epochs of shuffled mini-batches, validation and model
selection, a progress bar, metrics files, and atomic, exactly resumable checkpoints.

A trainer is a list of :class:`Phase` objects (e.g. Bi-DFCL: teacher, target warm start, bi-level)
plus the modules, optimizers and random generators that make up its state. The shuffle of epoch e
of phase p comes from a generator seeded with ``(seed, p, e)``, so a run resumed from any
checkpoint (written at epoch ends, and every ``output.checkpoint_every`` batches) replays the same
batches with the same parameters, optimizer moments and generator states: on CPU it ends with
exactly the parameters of an uninterrupted run.

Files in ``output.dir`` (when given): ``checkpoint.pt`` (latest state, for ``--resume``),
``model.pt`` (the deployed model, see :func:`save_model`), ``metrics.json`` (final evaluation,
history, timings), ``history.csv`` (one row per epoch).
"""

from __future__ import annotations

import copy
import csv
import glob
import hashlib
import io
import json
import math
import os
import pickle
import sys
import time
import zipfile
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from .. import budgets as budget_units
from .._validate import InputError, status_message
from ..data import UpliftDataset
from ..devices import resolve_device
from ..models import MultiHeadMLP, model_from_config
from .config import ConfigError, RunConfig, run_sections, upgrade_run_config
from .datasets import RunData, free_options, max_arm_cost
from .evaluate import eval_budgets, evaluate_model, per_capita_budgets
from .parallel import Parallel, ParallelError, RowShard

__all__ = [
    "Phase",
    "Trainer",
    "Progress",
    "save_model",
    "load_model",
    "atomic_save",
    "factual_loss",
    "read_checkpoint",
    "TrainingDiverged",
    "data_fingerprint",
    "remove_stale_temporaries",
]

CHECKPOINT_VERSION = 1


def factual_loss(
    r_hat: torch.Tensor, c_hat: torch.Tensor, batch: UpliftDataset, reduce: bool = True, heads: str = "both"
) -> torch.Tensor:
    """Squared error on the logged cells: ``(r_hat[i, t_i] - revenue_i)^2 + (c_hat[i, t_i] - cost_i)^2``
    (mean over rows, or per row with ``reduce=False``); ``heads = "revenue"`` or ``"cost"`` keeps
    one of the two terms."""
    t = batch.treatment.unsqueeze(1)
    err = 0.0
    if heads in ("both", "revenue"):
        err = err + (r_hat.gather(1, t).squeeze(1) - batch.revenue.to(r_hat.dtype)) ** 2
    if heads in ("both", "cost"):
        err = err + (c_hat.gather(1, t).squeeze(1) - batch.cost.to(c_hat.dtype)) ** 2
    return err.mean() if reduce else err


def _temporary_name(path: str) -> str:
    """``.<name>.<pid>.tmp`` next to ``path``: the half-written file of an atomic write."""
    folder = os.path.dirname(os.path.abspath(path))
    return os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")


def _atomic_write(path: str, write) -> None:
    """``write(file)`` into a temporary file in the same folder, fsync, then ``os.replace`` onto ``path``
    (readers see the old file or the new one, never half of one; the temporary file is removed on
    any failure)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` (never half-written)."""
    _atomic_write(path, lambda fh: torch.save(obj, fh))


def _atomic_text(text: str, path: str) -> None:
    _atomic_write(path, lambda fh: fh.write(text.encode()))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove the ``.<file>.<pid>.tmp`` files that atomic writes of processes no longer running left in
    ``folder`` (a write killed between open and rename); returns the removed paths. Files of live
    processes (another run writing into the same folder) are kept."""
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(folder), ".*.tmp")):
        pid = tmp.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                os.remove(tmp)
                removed.append(tmp)
            except OSError:
                pass
    return removed


#: what torch.load raises on a file that is not a (complete) torch save (random bytes can also read
#: as a pickle opcode with an absurd length: OverflowError, or MemoryError for the buffer it asks for)
_UNREADABLE = (
    EOFError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    RuntimeError,
    OSError,
    ValueError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    TypeError,
    UnicodeDecodeError,
    OverflowError,
    MemoryError,
)


def _read_blob(path: str, what: str, hint: str) -> dict:
    """``torch.load`` of ``path`` with errors that say which file is damaged and what to do."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"bidfcl: {what} {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"bidfcl: {what} {path!r} is a folder, expected a file written by bidfcl")
    if os.path.getsize(path) == 0:
        raise ValueError(f"bidfcl: {what} {path!r} is empty (0 bytes); {hint}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except _UNREADABLE as exc:
        raise ValueError(
            f"bidfcl: {what} {path!r} is damaged or not a bidfcl file (truncated or another format; "
            f"torch.load raised {type(exc).__name__}); {hint}"
        ) from None
    if not isinstance(blob, dict):
        raise ValueError(f"bidfcl: {what} {path!r} is not a bidfcl file (it holds a {type(blob).__name__}); {hint}")
    return blob


def _require_keys(blob: dict, keys, path: str, what: str, hint: str) -> None:
    missing = [k for k in keys if k not in blob]
    if missing:
        raise ValueError(f"bidfcl: {what} {path!r} is incomplete (no {', '.join(missing)}); {hint}")


_CHECKPOINT_KEYS = (
    "format",
    "version",
    "method",
    "deployed",
    "run_config",
    "model_configs",
    "modules",
    "optimizers",
    "generators",
    "torch_rng",
    "position",
    "history",
    "best",
    "running",
    "timings",
    "extra",
)
_CHECKPOINT_HINT = "delete it (training then starts over) or resume from an intact copy"


def read_checkpoint(path: str) -> dict:
    """Read and structurally check a trainer checkpoint (before any data is generated or read)."""
    blob = _read_blob(path, "checkpoint", _CHECKPOINT_HINT)
    if blob.get("format") != "bidfcl.checkpoint":
        raise ValueError(
            f"bidfcl: {path!r} is not a bidfcl checkpoint (format {blob.get('format')!r}); {_CHECKPOINT_HINT}"
        )
    _require_keys(blob, _CHECKPOINT_KEYS, path, "checkpoint", _CHECKPOINT_HINT)
    if isinstance(blob["run_config"], dict):  # written before the per-method sections: today's layout
        blob["run_config"] = upgrade_run_config(blob["run_config"])
    pos = blob["position"]
    if not (
        isinstance(pos, dict)
        and all(isinstance(pos.get(k), int) and pos[k] >= 0 for k in ("phase", "epoch", "batch", "step"))
    ):
        raise ValueError(f"bidfcl: checkpoint {path!r} has a damaged position {pos!r}; {_CHECKPOINT_HINT}")
    return blob


def data_fingerprint(
    ds: Optional[UpliftDataset], parallel: Optional[Parallel] = None, shard: Optional[RowShard] = None
) -> Optional[dict]:
    """Rows, features, options and a SHA-256 of up to 4096 evenly spaced rows (features, treatment,
    revenue, cost) of a split: a resumed run refuses data that changed under the same path.

    In a data-parallel run ``ds`` is this rank's ``shard``: each rank contributes the sampled rows
    it holds, gathered in rank order, so the fingerprint is the one of the whole split."""
    if ds is None:
        return None
    n = len(ds) if shard is None else shard.n_global
    idx = (
        torch.linspace(0, max(n - 1, 0), steps=min(n, 4096)).round().to(torch.int64)
        if n
        else torch.zeros(0, dtype=torch.int64)
    )
    if shard is not None:
        idx = shard.local(idx)
    parts = [
        t.detach().cpu().contiguous().to(torch.float64 if t.is_floating_point() else torch.int64).numpy().tobytes()
        for t in (ds.x[idx], ds.treatment[idx], ds.revenue[idx], ds.cost[idx])
    ]
    ranks = [parts] if parallel is None or not parallel.active or shard is None else parallel.gather_objects(parts)
    h = hashlib.sha256()
    for k in range(4):
        for rank_parts in ranks:
            h.update(rank_parts[k])
    options = ds.n_options if parallel is None else int(parallel.max(torch.tensor([ds.n_options]))[0])
    return {"rows": n, "features": ds.n_features, "options": options, "sha256": h.hexdigest()}


def _describe_fp(fp: Optional[dict]) -> str:
    if fp is None:
        return "absent"
    return f"{fp['rows']} rows x {fp['features']} features, {fp['options']} options, sample hash {fp['sha256'][:12]}"


class TrainingDiverged(ValueError):
    """A loss or a parameter became non-finite during training."""


def save_model(
    model: MultiHeadMLP, path: str, *, run_config: Optional[dict] = None, method: str = "", extra: Optional[dict] = None
) -> None:
    """Write a deployable model: constructor config, weights (with the feature scaler), the run's config."""
    atomic_save(
        {
            "format": "bidfcl.model",
            "version": 1,
            "model_config": model.config(),
            "state_dict": model.state_dict(),
            "run_config": run_config,
            "method": method,
            "extra": extra or {},
        },
        path,
    )


_MODEL_HINT = "give a model.pt (or checkpoint.pt) written by `bidfcl train`"


def load_model(path: str) -> tuple[MultiHeadMLP, dict]:
    """Read :func:`save_model`'s file (or a trainer checkpoint) -> ``(model, metadata)``."""
    blob = _read_blob(path, "model file", _MODEL_HINT)
    if blob.get("format") not in ("bidfcl.model", "bidfcl.checkpoint"):
        raise ValueError(f"bidfcl: {path!r} is not a bidfcl model or checkpoint file; {_MODEL_HINT}")
    if blob["format"] == "bidfcl.checkpoint":
        blob = read_checkpoint(path)
        name = blob["deployed"]
        if name not in blob["model_configs"] or name not in blob["modules"]:
            raise ValueError(f"bidfcl: checkpoint {path!r} lacks its deployed model {name!r}; {_MODEL_HINT}")
        blob = {
            "model_config": blob["model_configs"][name],
            "state_dict": blob["modules"][name],
            "run_config": blob["run_config"],
            "method": blob["method"],
            "extra": {},
        }
    _require_keys(blob, ("model_config", "state_dict"), path, "model file", _MODEL_HINT)
    if isinstance(blob.get("run_config"), dict):
        blob["run_config"] = upgrade_run_config(blob["run_config"])
    try:
        model = model_from_config(blob["model_config"])
        model.load_state_dict(blob["state_dict"])
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise ValueError(
            f"bidfcl: model file {path!r} is damaged (its weights do not fit its configuration: "
            f"{str(exc).splitlines()[0][:160]}); {_MODEL_HINT}"
        ) from None
    model.eval()
    return model, blob


class Progress:
    """A dependency-free progress line on stderr with the running losses.

    ``mode``: ``bar`` (rewritten in place), ``lines`` (one line per epoch), ``none``, or ``auto``
    (``bar`` on a terminal, else ``lines``).
    """

    def __init__(self, mode: str = "auto", stream=None):
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        self.mode = mode
        self._last = 0.0

    @staticmethod
    def _losses(running: dict) -> str:
        return " ".join(f"{k}={s / max(n, 1):.4g}" for k, (s, n) in running.items())

    def batch(self, phase: str, epoch: int, epochs: int, done: int, total: int, running: dict) -> None:
        if self.mode != "bar":
            return
        now = time.perf_counter()
        if done < total and now - self._last < 0.2:
            return
        self._last = now
        width = 24
        fill = int(width * done / max(total, 1))
        self.stream.write(
            f"\r{phase} {epoch + 1}/{epochs} [{'#' * fill}{'.' * (width - fill)}] "
            f"{done}/{total} {self._losses(running)}\033[K"
        )
        self.stream.flush()

    def epoch(self, phase: str, epoch: int, epochs: int, running: dict, seconds: float, extra: str = "") -> None:
        if self.mode == "none":
            return
        prefix = "\r" if self.mode == "bar" else ""
        self.stream.write(
            f"{prefix}{phase} {epoch + 1}/{epochs} {self._losses(running)} ({seconds:.2f} s){extra}"
            + ("\033[K" if self.mode == "bar" else "")
            + "\n"
        )
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.mode != "none":
            self.stream.write(text + "\n")
            self.stream.flush()


@dataclass
class Phase:
    """A stage of training: ``epochs`` passes of shuffled ``rows`` through ``step``.

    ``step(batch, index)`` takes one optimisation step and returns ``{name: loss value}``;
    ``select`` names the module chosen on validation after this phase's epochs (None: no
    selection); ``begin`` runs at the phase's start (also when resuming inside it) and must be
    idempotent.
    """

    name: str
    epochs: int
    rows: UpliftDataset
    step: Callable[[UpliftDataset, torch.Tensor], dict]
    select: Optional[str] = None
    begin: Optional[Callable[[], None]] = None
    select_initial: bool = False  #: also a candidate for selection: the module as the phase starts
    #: data-parallel runs: which global rows ``rows`` are (None: all of them)
    shard: Optional[RowShard] = None


def _mix_seed(*parts: int) -> int:
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) + 0x632BE59BD9B4E019 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


class Trainer:
    """Base class: subclasses build modules in :meth:`build` and list :meth:`phases`."""

    method = "base"
    deployed_name = "model"

    def __init__(
        self,
        cfg: RunConfig,
        data: RunData,
        *,
        out_dir: Optional[str] = None,
        progress: Optional[Progress] = None,
        parallel: Optional[Parallel] = None,
    ):
        #: this process's place in a data-parallel run (torchrun); a group of one otherwise
        self.parallel = par = parallel if parallel is not None else Parallel.current()
        if data.rct is None or len(data.rct) == 0:
            raise ConfigError("bidfcl: training needs RCT rows (data.rct)")
        if par.active:
            par.run_agreed("checking the run for data-parallel training", self._check_parallel, cfg, data)
        self.device = par.run_agreed("resolving train.device", resolve_device, cfg.train.device, "train.device")
        if par.active:
            data = par.run_agreed("sharding the data", data.shard, par)
            self._check_ranks_agree(par, cfg, data)
        self.cfg, self.data = cfg, data.to(self.device)
        self.out_dir = out_dir
        if progress is None:
            progress = Progress(cfg.output.progress if par.is_main else "none")
        self.progress = progress
        t = cfg.train
        self.seed = int(t.seed)
        top = max_arm_cost(self.data.rct, par)
        self.train_budget = budget_units.convert(t.budget_fraction, "share", "per_capita", reference_cost=top)
        self.val_ds = self.data.validation()
        self.val_shard = self.data.row_shard("val" if self.data.val is not None else "rct")
        self.val_budgets = eval_budgets(
            cfg.eval, self.val_ds, par, self._rows("val" if self.data.val is not None else "rct")
        )
        #: per-capita training budget(s) of the decision losses
        if t.budgets is not None:
            self.train_budgets = per_capita_budgets(t.budgets, t.budget_unit, self.data.rct, par, self._rows("rct"))
            self.train_budget = self.train_budgets[0]
        else:
            self.train_budgets = budget_units.convert(
                list(t.budget_fractions or [t.budget_fraction]), "share", "per_capita", reference_cost=top
            )
        self.position = {"phase": 0, "epoch": 0, "batch": 0, "step": 0}
        #: (rows of this rank, rows of all ranks) in the current global batch
        self.batch_rows: Optional[tuple[int, int]] = None
        self._fingerprints = self.data_fingerprints()
        self.history: list[dict] = []
        self.best: dict = {}
        self.running: dict = {}
        self._first_bad: dict = {}  #: loss name -> first non-finite batch of the epoch (device tensors)
        self._unsettled: dict = {}  #: data-parallel runs: this rank's parts of the sums since the last settle
        #: keep step losses on the device until the epoch ends (accelerators; and data-parallel runs,
        #: whose ranks must stop on a non-finite loss together); on the CPU a read is free
        self.defer_loss_reads = self.device.type != "cpu" or par.active
        #: run the solver and losses of a step with check=False (no host read) and check their status
        #: records when the losses are read (:meth:`_settle`): on accelerators, in one process
        self.lazy_checks = self.device.type != "cpu" and not par.active
        self._statuses: list = []  #: (batch, status record) of the lazily checked calls since the last settle
        self.timings: dict = {}
        torch.manual_seed(self.seed)
        self.build()

    # ------------------------------------------------------------------------ subclass interface
    def build(self) -> None:
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def modules(self) -> dict:
        return {"model": self.model}

    def optimizers(self) -> dict:
        return {"model": self.opt}

    def generators(self) -> dict:
        return {}

    def validation_loss(self, name: str) -> float:
        """The trainer's own objective of module ``name`` on the validation split (lower is better)."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------- helpers
    def new_model(self, output: Optional[str] = None, hidden=None) -> MultiHeadMLP:
        m = self.cfg.model
        if output is not None:  # e.g. the bridge: logits, no cost heads to fix
            free = []
        elif m.free_options is None:
            free = free_options(self.data.rct, self.data.obs, parallel=self.parallel)
        else:
            free = m.free_options
        model = MultiHeadMLP(
            self.data.n_features,
            self.data.n_options,
            hidden=hidden or m.hidden,
            activation=m.activation,
            output=output or m.output,
            cost_output=None if output else m.cost_output,
            dropout=m.dropout,
            free_options=free,
        )
        model.fit_scaler(
            self.data.rct.x if self.data.obs is None else torch.cat([self.data.rct.x, self.data.obs.x]),
            parallel=self.parallel,
        )
        return model.to(device=self.device, dtype=self.data.rct.dtype)

    # ---------------------------------------------------------------------- data-parallel helpers
    @staticmethod
    def _check_parallel(cfg: RunConfig, data: RunData) -> None:
        """What a data-parallel run cannot do (checked on every rank before any collective)."""
        t = cfg.train
        if cfg.bidfcl.hypergradient == "unrolled":
            raise ConfigError(
                "bidfcl: bidfcl.hypergradient = 'unrolled' (an ablation) runs in one process only; "
                "use the default 'cg' under torchrun"
            )
        spec = str(t.device).strip().lower()
        if spec.startswith("cuda:"):
            raise ConfigError(
                f"bidfcl: train.device = {t.device!r} under torchrun would put every rank on one GPU; "
                f"use 'cuda' or 'auto' (each rank takes the GPU of its LOCAL_RANK)"
            )
        if cfg.model.dropout:
            raise ConfigError(
                f"bidfcl: model.dropout = {cfg.model.dropout} under torchrun: the ranks would draw "
                f"different masks than one process does; use dropout = 0 for data-parallel training"
            )

    @staticmethod
    def _check_ranks_agree(par: Parallel, cfg: RunConfig, data: RunData) -> None:
        """Every rank must train the same run on shards of the same splits: the configuration (all but
        the device), the splits present, features, options and dtype are all-gathered and compared."""
        d = cfg.to_dict()
        d["train"] = {k: v for k, v in d["train"].items() if k != "device"}
        run = hashlib.sha256(
            json.dumps({k: d[k] for k in run_sections()}, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        mine = {
            "config": run,
            "splits": [k for k in ("rct", "obs", "val", "test") if getattr(data, k) is not None],
            "features": data.n_features,
            "options": data.n_options,
            "dtype": str(data.rct.dtype),
        }
        every = par.gather_objects(mine)
        for key in mine:
            seen = [e[key] for e in every]
            if any(v != seen[0] for v in seen):
                listing = ", ".join(f"rank {r}: {v}" for r, v in enumerate(seen))
                what = "configurations (data, model, train or eval sections)" if key == "config" else key
                raise ParallelError(
                    f"bidfcl ({par.where()}): the ranks were given different {what} ({listing}); "
                    f"every rank must train the same run on shards of the same data"
                )

    def _rows(self, name: str) -> int:
        """Rows of split ``name`` over all ranks."""
        shard = self.data.row_shard(name)
        return len(self.data.split(name)) if shard is None else shard.n_global

    def shard_of(self, name: str) -> Optional[RowShard]:
        """Which global rows of split ``name`` this rank holds (None when alone)."""
        return self.data.row_shard(name)

    def scaled(self, loss: torch.Tensor, averaged: bool = True, rows: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """This rank's part of a mean over a global batch, from the mean ``loss`` over its own rows:
        ``loss * n_local / n_global`` (times P with ``averaged``, when DDP averages the gradients
        over ranks; without it the parts are summed, e.g. by the hypergradient's ``reduce``);
        ``loss`` itself when alone. ``rows``: ``(n_local, n_global)`` of the batch (default: the
        current global batch of the phase). A rank without rows in the batch gets a zero that keeps
        the graph (its gradients are zero)."""
        rows = self.batch_rows if rows is None else rows
        if not self.parallel.active or rows is None:
            return loss
        n_local, n_global = rows
        if n_local == 0:
            return loss.nan_to_num(0.0) * 0.0
        return loss * self.parallel.batch_scale(n_local, n_global, averaged)

    def split_mean(self, value: torch.Tensor, ds: UpliftDataset, shard: Optional[RowShard]) -> float:
        """A mean over the rows ``ds`` of one rank as the mean over every rank's rows of that split."""
        if not self.parallel.active or shard is None:
            return float(value)
        part = (
            value.detach().to(torch.float64) * (len(ds) / shard.n_global)
            if len(ds)
            else torch.zeros((), dtype=torch.float64)
        )
        return float(self.parallel.sum(part.reshape(1))[0])

    def adam(self, module: nn.Module, lr: Optional[float] = None) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            module.parameters(), lr=lr or self.cfg.train.lr, weight_decay=self.cfg.train.weight_decay
        )

    @property
    def deployed(self) -> MultiHeadMLP:
        return self.modules()[self.deployed_name]

    def validation_eom(self, name: str) -> float:
        return evaluate_model(self.modules()[name], self.val_ds, self.val_budgets, parallel=self.parallel)["eom_mean"]

    # ------------------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Optional[str]:
        return None if self.out_dir is None else os.path.join(self.out_dir, "checkpoint.pt")

    def _comparable_config(self) -> dict:
        """What a resumed run must share with its checkpoint (not the device: a run may move)."""
        d = self.cfg.to_dict()
        out = {k: d[k] for k in run_sections()}
        out["train"] = {k: v for k, v in out["train"].items() if k != "device"}
        return out

    def state(self) -> dict:
        return {
            "format": "bidfcl.checkpoint",
            "version": CHECKPOINT_VERSION,
            "method": self.method,
            "deployed": self.deployed_name,
            "run_config": self.cfg.to_dict(),
            "model_configs": {k: m.config() for k, m in self.modules().items()},
            "modules": {k: m.state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "generators": {k: g.get_state() for k, g in self.generators().items()},
            "torch_rng": torch.get_rng_state(),
            "position": dict(self.position),
            "history": copy.deepcopy(self.history),
            "best": self.best,
            "running": dict(self.running),
            "timings": dict(self.timings),
            "extra": dict(self.extra_state(), data_fingerprint=self._fingerprints),
        }

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, extra: dict) -> None:
        pass

    def save_checkpoint(self) -> None:
        """Write the checkpoint (rank 0 of a data-parallel run: the state is the same on every rank)."""
        if self.checkpoint_path is not None and self.parallel.is_main:
            atomic_save(self.state(), self.checkpoint_path)

    def data_fingerprints(self) -> dict:
        """:func:`data_fingerprint` of every split: of all ranks' rows together in a data-parallel run
        (the same as one process computes on the whole data)."""
        return {
            k: data_fingerprint(getattr(self.data, k), self.parallel, self.data.row_shard(k))
            for k in ("rct", "obs", "val", "test")
        }

    def load_checkpoint(self, path: str, blob: Optional[dict] = None) -> None:
        blob = read_checkpoint(path) if blob is None else blob
        if blob["version"] != CHECKPOINT_VERSION or blob["method"] != self.method:
            raise ValueError(
                f"bidfcl: checkpoint {path!r} is a {blob['method']!r} checkpoint v{blob['version']}, "
                f"expected {self.method!r} v{CHECKPOINT_VERSION}"
            )
        saved = {k: dict(blob["run_config"].get(k, {})) for k in run_sections()}
        saved["train"].pop("device", None)
        if saved != self._comparable_config():
            now = self._comparable_config()
            diff = [f"{s}.{k}" for s in saved for k in set(saved[s]) | set(now[s]) if saved[s].get(k) != now[s].get(k)]
            raise ConfigError(
                f"bidfcl: checkpoint {path!r} was written with a different configuration "
                f"(differs in {', '.join(sorted(diff))}); use a new output.dir or the same config"
            )
        saved_fp = blob["extra"].get("data_fingerprint") if isinstance(blob["extra"], dict) else None
        if saved_fp is not None:
            now_fp = self.data_fingerprints()
            changed = [k for k in now_fp if saved_fp.get(k) != now_fp[k]]
            if changed:
                what = "; ".join(
                    f"{k}: {_describe_fp(saved_fp.get(k))} then, {_describe_fp(now_fp[k])} now" for k in changed
                )
                raise ConfigError(
                    f"bidfcl: checkpoint {path!r} was written on other data than this run reads "
                    f"(split {what}); the data files changed since: use a new output.dir, or restore "
                    f"the data the checkpoint was trained on"
                )
        try:
            for k, m in self.modules().items():
                m.load_state_dict(blob["modules"][k])
            for k, o in self.optimizers().items():
                o.load_state_dict(blob["optimizers"][k])
            for k, g in self.generators().items():
                g.set_state(blob["generators"][k])
            torch.set_rng_state(blob["torch_rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ValueError(
                f"bidfcl: checkpoint {path!r} is damaged (its state does not fit this trainer: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}); {_CHECKPOINT_HINT}"
            ) from None
        self.position, self.history, self.best = dict(blob["position"]), blob["history"], blob["best"]
        self.running, self.timings = dict(blob["running"]), dict(blob["timings"])
        self.load_extra_state({k: v for k, v in blob["extra"].items() if k != "data_fingerprint"})

    # -------------------------------------------------------------------------------- the loop
    def _select(self, phase: Phase, epoch: int, record: dict) -> None:
        how = self.cfg.eval.select
        if phase.select is None or how == "last":
            return
        last = epoch + 1 == phase.epochs
        if epoch >= 0 and (epoch + 1) % self.cfg.eval.every and not last:
            return
        if how == "eom":
            metric = self.validation_eom(phase.select)
            better = lambda a, b: a > b  # noqa: E731
        else:
            metric = self.validation_loss(phase.select)
            better = lambda a, b: a < b  # noqa: E731
        record[f"val_{how}"] = metric
        cur = self.best.get(phase.name)
        if cur is None or better(metric, cur["metric"]):
            self.best[phase.name] = {
                "metric": metric,
                "epoch": epoch + 1,
                "state": copy.deepcopy(self.modules()[phase.select].state_dict()),
            }

    def _finish_phase(self, phase: Phase) -> None:
        best = self.best.get(phase.name)
        if phase.select is not None and best is not None and self.cfg.eval.select != "last":
            self.modules()[phase.select].load_state_dict(best["state"])

    def fit(self, resume: bool = False) -> dict:
        """Run (or, with ``resume`` and a checkpoint in ``out_dir``, continue) training; return the result."""
        if self.out_dir is not None and os.path.isdir(self.out_dir):
            remove_stale_temporaries(self.out_dir)
        if resume and self.checkpoint_path is not None and os.path.exists(self.checkpoint_path):
            self.load_checkpoint(self.checkpoint_path)
            pos = self.position
            self.progress.message(
                f"resuming {self.method} at phase {pos['phase']} epoch {pos['epoch']} "
                f"batch {pos['batch']} from {self.checkpoint_path}"
            )
        bs, every = self.cfg.train.batch_size, self.cfg.output.checkpoint_every
        phases = self.phases()
        t_start = time.perf_counter()
        for pi in range(self.position["phase"], len(phases)):
            ph = phases[pi]
            if ph.begin is not None:
                ph.begin()
            n = len(ph.rows) if ph.shard is None else ph.shard.n_global
            nb = -(-n // bs)
            if (
                ph.select_initial
                and ph.select is not None
                and ph.epochs > 0
                and self.position["epoch"] == 0
                and self.position["batch"] == 0
                and ph.name not in self.best
            ):
                self._select(ph, -1, {})  # "epoch 0": the starting point competes too
            for epoch in range(self.position["epoch"], ph.epochs):
                perm = torch.randperm(n, generator=torch.Generator().manual_seed(_mix_seed(self.seed, pi, epoch)))
                t0 = time.perf_counter()
                for b in range(self.position["batch"], nb):
                    idx = perm[b * bs : (b + 1) * bs]
                    if ph.shard is not None:  # the same global batch as one process; this rank's rows of it
                        local = ph.shard.local(idx)
                        self.batch_rows = (int(local.numel()), int(idx.numel()))
                        idx = local
                    try:
                        losses = ph.step(ph.rows.subset(idx), idx)
                    except ValueError as exc:  # e.g. the solver refusing non-finite predictions
                        if self._parameters_finite():
                            raise
                        raise self._diverged(ph, epoch, b, f"non-finite parameters ({exc})") from None
                    self._accumulate(ph, epoch, b, losses)
                    self.position["batch"] = b + 1
                    self.position["step"] += 1
                    if self.progress.mode == "bar":
                        self.progress.batch(ph.name, epoch, ph.epochs, b + 1, nb, self.running)
                    if every and (b + 1) % every == 0 and b + 1 < nb:
                        self._settle(ph, epoch)
                        self.save_checkpoint()
                self._settle(ph, epoch)
                seconds = time.perf_counter() - t0
                s, c = self.timings.get(ph.name, (0.0, 0))
                self.timings[ph.name] = (s + seconds, c + 1)
                record = {"phase": ph.name, "epoch": epoch + 1, "seconds": seconds}
                record.update({k: s / max(c, 1) for k, (s, c) in self.running.items()})
                self._select(ph, epoch, record)
                self.history.append(record)
                extra = "".join(f" {k}={v:.5g}" for k, v in record.items() if k.startswith("val_"))
                self.progress.epoch(ph.name, epoch, ph.epochs, self.running, seconds, extra)
                self.running = {}
                self.position.update(epoch=epoch + 1, batch=0)
                self.save_checkpoint()
            self._finish_phase(ph)
            self.position.update(phase=pi + 1, epoch=0, batch=0)
        self.save_checkpoint()
        return self.finish(time.perf_counter() - t_start)

    def _accumulate(self, phase: Phase, epoch: int, batch: int, losses: dict) -> None:
        """Add a step's losses to the running sums. On the CPU each is read at once (a non-finite one
        stops training at that batch); on an accelerator they stay device tensors, summed in float64
        with the first non-finite batch remembered, and are read at the epoch's end or when a
        checkpoint is written (:meth:`_settle`): no host synchronisation per batch."""
        if not self.defer_loss_reads:
            for k, v in losses.items():
                v, n = v if isinstance(v, tuple) else (v, 1)
                v, n = float(v), float(n)
                if not math.isfinite(v):
                    raise self._diverged(phase, epoch, batch, f"loss {k} = {v}")
                if n:
                    s, c = self.running.get(k, (0.0, 0))
                    self.running[k] = (s + v, c + int(n))
            return
        share = None
        if self.parallel.active and self.batch_rows is not None:  # this rank's part of the global batch's mean
            share = self.batch_rows[0] / max(self.batch_rows[1], 1)
        for k, v in losses.items():
            v, n = v if isinstance(v, tuple) else (v, 1)
            # a Python float becomes a float64 tensor (as_tensor would round it to float32 first)
            v = (
                v.detach().to(torch.float64)
                if isinstance(v, torch.Tensor)
                else torch.tensor(float(v), dtype=torch.float64, device=self.device)
            )
            if share is not None:
                v = v.nan_to_num(0.0) * 0.0 if share == 0 else v * share
            into = self._unsettled if self.parallel.active else self.running
            s, c = into.get(k, (0.0, 0))
            into[k] = (s + v, c + (n.detach().to(torch.int64) if isinstance(n, torch.Tensor) else n))
            bad = self._first_bad.get(k, torch.full((), -1, dtype=torch.int64, device=self.device))
            self._first_bad[k] = torch.where((bad < 0) & ~torch.isfinite(v), batch, bad)

    def status_sink(self) -> Optional[list]:
        """Where a step's solver and loss calls put their status records (``check=False``), or None
        (check eagerly). See :attr:`lazy_checks`."""
        if not self.lazy_checks:
            return None
        sink: list = []
        self._statuses.append((self.position["batch"], sink))
        return sink

    def _check_statuses(self, phase: Phase, epoch: int) -> None:
        """Raise the first error of the lazily checked calls since the last settle (one host read):
        the eager message, or the divergence message when the parameters are no longer finite."""
        pending = [(b, s) for b, sink in self._statuses for s in sink]
        self._statuses = []
        if not pending:
            return
        host = torch.stack([s.to(pending[0][1].device) for _, s in pending]).cpu()
        for (b, _), row in zip(pending, host.tolist()):
            msg = status_message(row)
            if msg is not None:
                if self._parameters_finite():
                    raise InputError(msg)
                raise self._diverged(phase, epoch, b, f"non-finite parameters ({msg})")

    def _settle(self, phase: Phase, epoch: int) -> None:
        """Read the device-side running sums (one synchronisation) and stop on a non-finite loss. In a
        data-parallel run the ranks' parts of the sums are added up (one all-reduce; the counts are
        the same on every rank) and every rank stops on the first bad batch of any rank."""
        par = self.parallel
        if par.active:
            keys = sorted(self._first_bad)
            never = torch.iinfo(torch.int64).max
            first = (
                torch.stack([torch.where(self._first_bad[k] < 0, never, self._first_bad[k]) for k in keys])
                if keys
                else torch.zeros(0, dtype=torch.int64)
            )
            first = -par.max(-first.cpu())  # the earliest over ranks
            self._first_bad = {k: torch.where(f == never, -1, f) for k, f in zip(keys, first)}
            names = sorted(self._unsettled)
            if names:  # the ranks' parts of this stretch's sums (the running sums so far are global)
                sums = par.sum(
                    torch.stack([torch.as_tensor(self._unsettled[k][0], dtype=torch.float64).cpu() for k in names])
                )
                for i, k in enumerate(names):
                    s, c = self.running.get(k, (0.0, 0))
                    self.running[k] = (s + float(sums[i]), c + int(self._unsettled[k][1]))
            self._unsettled = {}
        for k, bad in self._first_bad.items():
            b = int(bad)
            if b >= 0:
                self._first_bad, self._statuses = {}, []
                raise self._diverged(phase, epoch, b, f"loss {k} is not finite")
        self._first_bad = {}
        self._check_statuses(phase, epoch)
        self.running = {k: (float(s), int(c)) for k, (s, c) in self.running.items()}
        self.running = {k: (s, c) for k, (s, c) in self.running.items() if c}

    def _parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for m in self.modules().values() for p in m.parameters())

    def _diverged(self, phase: Phase, epoch: int, batch: int, what: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"bidfcl: training diverged in phase {phase.name!r} at epoch {epoch + 1}, batch {batch + 1} ({what}); "
            f"lower train.lr (now {self.cfg.train.lr:g}) or check the data for extreme values"
        )

    # ------------------------------------------------------------------------------- results
    def epoch_seconds(self) -> dict:
        return {k: s / max(c, 1) for k, (s, c) in self.timings.items()}

    def finish(self, seconds: float) -> dict:
        """Evaluate the deployed model on the test split (and write the output files)."""
        split = self.cfg.eval.split
        ds = getattr(self.data, split, None)
        if ds is None:
            ds = self.data.rct
            split = "rct"
        budgets = eval_budgets(self.cfg.eval, ds, self.parallel, self._rows(split))
        t0 = time.perf_counter()
        self.progress.message(
            f"evaluating the deployed model on the {split} split ({self._rows(split):,} rows, "
            f"{len(budgets)} budgets) ..."
        )
        evaluation = evaluate_model(
            self.deployed,
            ds,
            budgets,
            truth=self.data.marketing,
            split=split if self.data.marketing is not None else None,
            parallel=self.parallel,
        )
        self.progress.message(f"  done in {time.perf_counter() - t0:.1f} s")
        result = {
            "method": self.method,
            "split": split,
            "train_budget_per_capita": self.train_budget,
            "evaluation": evaluation,
            "epoch_seconds": self.epoch_seconds(),
            "fit_seconds": seconds,
            "best": {k: {"metric": v["metric"], "epoch": v["epoch"]} for k, v in self.best.items()},
            "history": self.history,
        }
        if self.parallel.active:
            result["world_size"] = self.parallel.world
        if self.out_dir is not None and self.parallel.is_main:
            os.makedirs(self.out_dir, exist_ok=True)
            save_model(
                self.deployed,
                os.path.join(self.out_dir, "model.pt"),
                run_config=self.cfg.to_dict(),
                method=self.method,
                extra={"train_budget_per_capita": self.train_budget},
            )
            _atomic_text(json.dumps(result, indent=1), os.path.join(self.out_dir, "metrics.json"))
            _atomic_text(history_csv(self.history), os.path.join(self.out_dir, "history.csv"))
        return result


def history_csv(history: list[dict]) -> str:
    keys: list[str] = []
    for rec in history:
        keys += [k for k in rec if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for rec in history:
        w.writerow({k: (f"{v:.8g}" if isinstance(v, float) and math.isfinite(v) else v) for k, v in rec.items()})
    return buf.getvalue()
