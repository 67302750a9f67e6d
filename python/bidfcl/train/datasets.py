"""The splits a run trains and evaluates on, built from the ``[data]`` section of a config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..data import DataError, MarketingData, UpliftDataset, count_rows, load_table, make_marketing
from ..data.scenarios import SCENARIOS, unknown_scenario_message
from .config import SYNTHETIC_KEYS, ConfigError, DataConfig

__all__ = [
    "RunData",
    "run_data",
    "as_run_data",
    "load_run_data",
    "synthetic_kwargs",
    "factual_rows",
    "max_arm_cost",
    "arm_cost_means",
    "free_options",
]


@dataclass
class RunData:
    """RCT (always), OBS, validation and test rows; ``marketing`` holds the ground truth (synthetic)."""

    rct: UpliftDataset
    obs: Optional[UpliftDataset]
    val: Optional[UpliftDataset]
    test: Optional[UpliftDataset]
    marketing: Optional[MarketingData] = None
    #: in a data-parallel run: split name -> the :class:`~bidfcl.train.parallel.RowShard` this
    #: process holds (its splits are then those shards); None: every split whole
    shards: Optional[dict] = None

    @property
    def n_options(self) -> int:
        return self.rct.n_options

    @property
    def n_features(self) -> int:
        return self.rct.n_features

    def split(self, name: str) -> UpliftDataset:
        ds = getattr(self, name, None)
        if ds is None:
            raise ConfigError(f"bidfcl: the run's data has no {name!r} split (give data.{name})")
        return ds

    def to(self, device) -> "RunData":
        """Every split on ``device`` (moved once; the same object when it is there already). The
        ground truth ``marketing`` stays where it is (evaluation brings choices to it)."""
        device = torch.device(device)
        splits = [self.rct, self.obs, self.val, self.test]
        if all(d is None or d.device == device for d in splits):
            return self
        moved = [None if d is None else d.to(device) for d in splits]
        return RunData(*moved, self.marketing, self.shards)

    def shard(self, parallel) -> "RunData":
        """This rank's contiguous rows of every split (:meth:`~bidfcl.train.parallel.Parallel.shard`),
        for data already in memory on every rank (e.g. generated); itself when alone or sharded."""
        if not parallel.active or self.shards is not None:
            return self
        parts, shards = {}, {}
        for name in _SPLITS:
            ds = getattr(self, name)
            if ds is None:
                parts[name] = None
                continue
            shards[name] = parallel.shard(len(ds), f"split {name!r}")
            lo, hi, _ = shards[name].segments[0]
            parts[name] = ds.subset(torch.arange(lo, hi, device=ds.device))
        return RunData(parts["rct"], parts["obs"], parts["val"], parts["test"], self.marketing, shards)

    def row_shard(self, name: str):
        """The :class:`~bidfcl.train.parallel.RowShard` of split ``name`` (None when not sharded)."""
        return None if self.shards is None else self.shards.get(name)

    def validation(self) -> UpliftDataset:
        """The model-selection split: ``val`` if present, else the RCT training rows."""
        return self.val if self.val is not None else self.rct


_SPLITS = ("rct", "obs", "val", "test")
_ROW_KEYS = ("x", "treatment", "revenue", "cost", "propensity")


def _as_dataset(split: str, rows, dtype: Optional[torch.dtype]) -> Optional[UpliftDataset]:
    """One split from an :class:`UpliftDataset` or a mapping of arrays ``x`` ``[N, F]``, ``treatment``,
    ``revenue``, ``cost`` ``[N]`` and optional ``propensity`` ``[N]`` (numpy arrays, tensors or lists)."""

    if rows is None:
        return None
    if isinstance(rows, UpliftDataset):
        ds = rows
    elif isinstance(rows, dict):
        unknown = sorted(set(rows) - set(_ROW_KEYS))
        missing = [k for k in _ROW_KEYS[:4] if k not in rows]
        if unknown or missing:
            raise DataError(
                f"bidfcl.train.run_data: split {split!r} expected keys {list(_ROW_KEYS[:4])} "
                f"(and optional 'propensity'), got {sorted(rows)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
            )
        tens = {}
        for k in _ROW_KEYS:
            if rows.get(k) is None:
                continue
            v = rows[k]
            try:
                t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
            except (TypeError, ValueError) as exc:
                raise DataError(
                    f"bidfcl.train.run_data: split {split!r} key {k!r}: expected a numeric array, "
                    f"got {type(v).__name__} ({exc})"
                ) from None
            if k == "treatment":
                if t.is_floating_point():
                    whole = bool(torch.all(t == t.round())) and bool(torch.isfinite(t).all())
                    if not whole:
                        raise DataError(
                            f"bidfcl.train.run_data: split {split!r} 'treatment' must hold whole "
                            f"option numbers, got non-integer values"
                        )
                t = t.to(torch.int64)
            elif t.is_complex():
                raise DataError(
                    f"bidfcl.train.run_data: split {split!r} key {k!r}: expected real numbers, got {t.dtype}"
                )
            tens[k] = t
        fdtype = dtype or (tens["x"].dtype if tens["x"].is_floating_point() else torch.float32)
        for k in ("x", "revenue", "cost", "propensity"):
            if k in tens:
                tens[k] = tens[k].to(fdtype)
        ds = UpliftDataset(tens["x"], tens["treatment"], tens["revenue"], tens["cost"], tens.get("propensity"))
    else:
        raise DataError(
            f"bidfcl.train.run_data: split {split!r}: expected an UpliftDataset or a dict of arrays, "
            f"got {type(rows).__name__}"
        )
    if dtype is not None and ds.dtype != dtype:
        ds = ds.to(dtype=dtype)
    try:
        ds.validate(require_all_arms=split != "obs")
    except DataError as exc:
        raise DataError(f"bidfcl.train.run_data: split {split!r}: {exc}") from None
    return ds


def run_data(rct=None, obs=None, val=None, test=None, *, dtype: Optional[torch.dtype] = None) -> RunData:
    """Training data a caller already holds, as a :class:`RunData` for :func:`bidfcl.train.make_trainer`
    and :func:`bidfcl.train.experiment.run_experiment`.

    Each split is an :class:`~bidfcl.data.UpliftDataset` or a dict of arrays ``x`` ``[N, F]``,
    ``treatment`` (integers ``0..M-1``), ``revenue``, ``cost`` and optionally ``propensity`` (the logged
    option's assignment probability; default: arm shares). ``rct`` is required and, like ``val`` and
    ``test``, must show every option; ``obs`` (the large observational log) may miss some. All splits
    must have the same features; M is the largest option count among them. ``dtype`` converts every
    split (default: keep the features' dtype, float32 for integer features).
    """
    parts = {k: _as_dataset(k, v, dtype) for k, v in zip(_SPLITS, (rct, obs, val, test))}
    if parts["rct"] is None or len(parts["rct"]) == 0:
        raise DataError("bidfcl.train.run_data: the 'rct' split is required and must have rows")
    present = {k: d for k, d in parts.items() if d is not None}
    feats = {k: d.n_features for k, d in present.items()}
    if len(set(feats.values())) != 1:
        raise DataError(f"bidfcl.train.run_data: every split needs the same features, got {feats}")
    dtypes = {k: str(d.dtype) for k, d in present.items()}
    if len(set(dtypes.values())) != 1:
        raise DataError(f"bidfcl.train.run_data: every split needs the same dtype (pass dtype=), got {dtypes}")
    m = max(d.n_options for d in present.values())
    fix = lambda d: None if d is None else d._replace(n_options=m)  # noqa: E731
    return RunData(fix(parts["rct"]), fix(parts["obs"]), fix(parts["val"]), fix(parts["test"]), None)


def as_run_data(data) -> RunData:
    """``data`` as a :class:`RunData`: itself, or a dict with split names as keys (see :func:`run_data`)."""
    if isinstance(data, RunData):
        return data
    if isinstance(data, dict) and set(data) <= set(_SPLITS) | {"dtype"}:
        return run_data(**data)
    raise DataError(
        f"bidfcl.train: expected the data as a RunData or a dict with keys among {list(_SPLITS)}, got "
        f"{type(data).__name__}" + (f" with keys {sorted(data)}" if isinstance(data, dict) else "")
    )


_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "torch.float32": torch.float32,
    "torch.float64": torch.float64,
}


def synthetic_kwargs(cfg: DataConfig) -> dict:
    """The make_marketing keywords of a synthetic ``[data]`` section: the scenario's (``data.scenario``)
    as the base, every key the section sets on top (``dtype`` still a string)."""
    if cfg.scenario is not None:
        if cfg.scenario not in SCENARIOS:
            raise ConfigError(f"bidfcl config: data.scenario: {unknown_scenario_message(cfg.scenario)}")
        kwargs = dict(SCENARIOS[cfg.scenario].kwargs)
    else:
        kwargs = {}
    kwargs.update({k: getattr(cfg, k) for k in SYNTHETIC_KEYS if getattr(cfg, k) is not None})
    return kwargs


def load_run_data(cfg: DataConfig, *, seed_offset: int = 0, parallel=None) -> RunData:
    """Generate (``source = "synthetic"``) or read (``source = "files"``) the run's splits.

    ``seed_offset`` is added to the synthetic ``seed`` (``bidfcl experiment`` draws a fresh sample of
    the same world per seed). With ``data.scenario`` the scenario's keywords are the base and the
    section's own keys override them.

    ``parallel`` (an active :class:`~bidfcl.train.parallel.Parallel`, data-parallel training):
    each rank keeps only its contiguous shard of every split. Files are then read shard by shard
    (Parquet: only the row groups of the shard; CSV: up to its last row), so no process ever holds
    a whole split; M is the largest over all ranks, and an arm an RCT-like split lacks on every
    rank is an error on every rank. Synthetic data are generated whole on every rank, then cut.
    """
    if cfg.source == "synthetic":
        kwargs = synthetic_kwargs(cfg)
        if "dtype" in kwargs:
            if kwargs["dtype"] not in _DTYPES:
                raise ConfigError(f"bidfcl config: expected data.dtype 'float32' or 'float64', got {kwargs['dtype']!r}")
            kwargs["dtype"] = _DTYPES[kwargs["dtype"]]
        kwargs["seed"] = int(kwargs.get("seed", 0)) + int(seed_offset)
        try:
            md = make_marketing(**kwargs)
        except ValueError as exc:
            raise ConfigError(f"bidfcl config: [data] rejected by make_marketing: {exc}") from None
        whole = RunData(md.rct, md.obs, md.val, md.test, md)
        return whole if parallel is None else whole.shard(parallel)
    if cfg.scenario is not None:
        raise ConfigError(
            f"bidfcl config: data.scenario = {cfg.scenario!r} needs data.source = 'synthetic', got {cfg.source!r}"
        )

    def read(path: Optional[str], split: str) -> Optional[UpliftDataset]:
        if path is None:
            return None
        return load_table(
            path,
            list(cfg.features),
            cfg.treatment,
            cfg.revenue,
            cfg.cost,
            cfg.propensity_column,
            require_all_arms=split != "obs",
            split=split,
        )

    if parallel is not None and parallel.active:
        return _read_shards(cfg, parallel)
    rct = read(cfg.rct, "rct")
    obs, val, test = read(cfg.obs, "obs"), read(cfg.val, "val"), read(cfg.test, "test")
    m = max(d.n_options for d in (rct, obs, val, test) if d is not None)
    fix = lambda d: None if d is None else d._replace(n_options=m)  # noqa: E731
    return RunData(fix(rct), fix(obs), fix(val), fix(test), None)


def _read_shards(cfg: DataConfig, parallel) -> RunData:
    """:func:`load_run_data` of files on one rank of a data-parallel run (see there)."""
    paths = {k: getattr(cfg, k) for k in _SPLITS if getattr(cfg, k) is not None}

    def read_mine():
        parts, shards = {}, {}
        for split, path in paths.items():
            shards[split] = parallel.shard(count_rows(path), f"split {split!r} ({path})")
            lo, hi, _ = shards[split].segments[0]
            parts[split] = load_table(
                path,
                list(cfg.features),
                cfg.treatment,
                cfg.revenue,
                cfg.cost,
                cfg.propensity_column,
                split=split,
                rows=(lo, hi),
            )
        return parts, shards

    parts, shards = parallel.run_agreed("reading this rank's rows of the data files", read_mine)
    m = int(parallel.max(torch.tensor([max(d.n_options for d in parts.values())]))[0])
    for split in ("rct", "val", "test"):
        if split not in parts:
            continue
        counts = parallel.sum(torch.bincount(parts[split].treatment, minlength=m)[:m])
        empty = [j for j in range(m) if int(counts[j]) == 0]
        if empty:  # the same global counts on every rank: every rank raises this
            raise DataError(
                f"bidfcl.data: expected every one of the {m} arms of an RCT in {paths[split]} "
                f"(split {split!r}) to have rows, got empty arm(s) {empty} on all {parallel.world} "
                f"ranks (rows per arm: {counts.tolist()})"
            )
    fixed = {k: parts[k]._replace(n_options=m) if k in parts else None for k in _SPLITS}
    return RunData(fixed["rct"], fixed["obs"], fixed["val"], fixed["test"], None, shards)


def factual_rows(ds: UpliftDataset) -> UpliftDataset:
    """Only ``x, treatment, revenue, cost`` (what a prediction loss uses; lets RCT and OBS concatenate)."""
    return UpliftDataset(ds.x, ds.treatment, ds.revenue, ds.cost, n_options=ds.n_options)


def arm_cost_means(ds: UpliftDataset, parallel=None) -> list[Optional[float]]:
    """Per-arm mean observed cost (None for an arm without rows), over every rank's rows when
    ``parallel`` is an active :class:`~bidfcl.train.parallel.Parallel`."""
    t = ds.treatment
    sums, counts = [], []
    for j in range(ds.n_options):
        mask = t == j
        sums.append(ds.cost[mask].to(torch.float64).sum() if bool(mask.any()) else torch.zeros((), dtype=torch.float64))
        counts.append(int(mask.sum()))
    if parallel is not None and parallel.active:
        both = parallel.sum(torch.stack([torch.stack(sums).cpu(), torch.tensor(counts, dtype=torch.float64)]))
        return [float(s / c) if c > 0 else None for s, c in zip(both[0].tolist(), both[1].tolist())]
    # alone: exactly ``cost[mask].mean()`` (torch's mean is the sum divided by the count)
    return [float(s / c) if c > 0 else None for s, c in zip(sums, counts)]


def max_arm_cost(ds: UpliftDataset, parallel=None) -> float:
    """Largest per-arm mean observed cost: an RCT estimate of the per-capita spend of the dearest
    option, the top of the budget range used for training and evaluation (global over ranks with
    an active ``parallel``)."""
    best = max([0.0] + [v for v in arm_cost_means(ds, parallel) if v is not None])
    if best <= 0:
        raise ConfigError("bidfcl: every arm has zero mean cost; no budget range to allocate over")
    return best


def free_options(*datasets: Optional[UpliftDataset], parallel=None) -> list[int]:
    """Options logged at least once whose every logged cost is exactly zero in ``datasets``
    (e.g. option 0, "no incentive"): their cost is known, not learned (over every rank's rows
    with an active ``parallel``)."""
    present = [d for d in datasets if d is not None and len(d) > 0]
    if not present:
        return []
    m = max(d.n_options for d in present)
    seen = torch.zeros(m, dtype=torch.bool)
    paid = torch.zeros(m, dtype=torch.bool)
    for d in present:
        seen |= torch.bincount(d.treatment, minlength=m)[:m].cpu() > 0
        paid.index_fill_(0, d.treatment[d.cost != 0].cpu(), True)
    if parallel is not None and parallel.active:
        flags = parallel.max(torch.stack([seen, paid]).to(torch.int32))
        seen, paid = flags[0] > 0, flags[1] > 0
    return [j for j in range(m) if bool(seen[j]) and not bool(paid[j])]
