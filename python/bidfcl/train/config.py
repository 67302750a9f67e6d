"""Run configuration: a TOML file with sections ``[data]``, ``[model]``, ``[train]`` (what every
method reads), one section per method (``[tsm]``, ``[dfcl]``, ``[bidfcl]``: what only that method
reads), ``[eval]``, ``[output]`` (and ``[experiment]`` for ``bidfcl experiment``), checked key by key.

Every key has a default (below); a file only lists what it changes. Unknown sections or keys,
values of the wrong type and values out of range raise :class:`ConfigError` naming the key, what
was expected and what arrived (with a "did you mean" hint for misspelt keys). Keys that moved out
of ``[train]`` into a method's section (:data:`MOVED_TRAIN_KEYS`, e.g. ``train.k``) raise a
ConfigError naming the new key; checkpoints and model files written before the move are mapped on
reading (:func:`upgrade_run_config`).

Example::

    [data]
    source = "synthetic"        # make_marketing(...) with the keys below passed through
    scenario = "biased-small-rct"   # optional: a named scenario's keywords as the base (bidfcl scenarios)
    n_rct = 20000
    seed = 0

    [train]
    method = "bidfcl"           # a registered method: tsm | dfcl | bidfcl (bidfcl.train.METHODS)
    loss = "ppl"                # a registered decision loss: ppl | pifd (dfcl also: dpl | mer | difd)
    epochs = 20

    [bidfcl]
    bridge_every = 20           # a bridge step every 20 target batches

    [output]
    dir = "runs/bidfcl-ppl"
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from .. import budgets as budget_units
from ..objectives import DECISION_LOSSES, decision_losses_for
from .registry import METHODS


def _toml_parser():
    """The TOML parser: the standard library's ``tomllib`` (Python >= 3.11), else ``tomli`` (the
    package it was taken from, with the same ``load``/``loads``/``TOMLDecodeError`` API; a dependency
    of bidfcl on Python 3.10), else None."""
    try:
        import tomllib as parser
    except ModuleNotFoundError:
        try:
            import tomli as parser
        except ModuleNotFoundError:
            return None
    return parser


#: the module configs and ``--set`` values are parsed with (see :func:`_toml_parser`)
tomllib = _toml_parser()
NO_TOML_PARSER = (
    "bidfcl config: reading TOML needs the standard library's tomllib (Python >= 3.11) or, on "
    "Python 3.10, the tomli package, and neither is importable: pip install 'tomli>=2'"
)

__all__ = [
    "ConfigError",
    "RunConfig",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "TsmConfig",
    "DfclConfig",
    "BidfclConfig",
    "EvalConfig",
    "OutputConfig",
    "ExperimentConfig",
    "load_config",
    "config_from_dict",
    "upgrade_run_config",
    "MOVED_TRAIN_KEYS",
    "RUN_SECTIONS",
]

TSM_DATA = ("rct", "obs", "pooled")
#: keys of make_marketing that a synthetic [data] section may set
SYNTHETIC_KEYS = (
    "n_rct",
    "n_obs",
    "n_val",
    "n_test",
    "n_features",
    "n_options",
    "outcome",
    "confounding",
    "selection",
    "hidden_confounder",
    "propensity",
    "obs_arm_shares",
    "seed",
    "world_seed",
    "dtype",
    "base_scale",
    "uplift_scale",
    "cost_scale",
    "cost_power",
    "u_strength",
    "revenue_noise",
    "cost_noise",
    "revenue_tail",
)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key, the expectation and the value."""


@dataclass
class DataConfig:
    source: str = "synthetic"  #: "synthetic" (make_marketing) or "files"
    #: synthetic only: a named scenario (bidfcl.data.SCENARIOS) whose make_marketing keywords are the
    #: base; the keys below that are set override them
    scenario: Optional[str] = None
    # synthetic: make_marketing keywords (None = its default)
    n_rct: Optional[int] = None
    n_obs: Optional[int] = None
    n_val: Optional[int] = None
    n_test: Optional[int] = None
    n_features: Optional[int] = None
    n_options: Optional[int] = None
    outcome: Optional[str] = None
    confounding: Optional[float] = None
    selection: Optional[float] = None
    hidden_confounder: Optional[bool] = None
    propensity: Optional[list] = None
    obs_arm_shares: Optional[list] = None
    seed: Optional[int] = None
    world_seed: Optional[int] = None
    dtype: Optional[str] = None
    base_scale: Optional[float] = None
    uplift_scale: Optional[float] = None
    cost_scale: Optional[float] = None
    cost_power: Optional[float] = None
    u_strength: Optional[float] = None
    revenue_noise: Optional[float] = None
    cost_noise: Optional[float] = None
    revenue_tail: Optional[float] = None
    # files: one table per split (Parquet or CSV), a column mapping, optional per-row propensity
    rct: Optional[str] = None
    obs: Optional[str] = None
    val: Optional[str] = None
    test: Optional[str] = None
    features: Optional[list] = None
    treatment: str = "treatment"
    revenue: str = "revenue"
    cost: str = "cost"
    propensity_column: Optional[str] = None


@dataclass
class ModelConfig:
    hidden: list = field(default_factory=lambda: [128, 64, 32])
    activation: str = "relu"
    output: str = "linear"  #: linear | sigmoid | softplus
    #: cost heads' output activation: softplus keeps predicted costs positive (with free_options at
    #: exactly 0, the model's cheapest policy is always "nobody paid", so every budget is feasible)
    cost_output: Optional[str] = "softplus"
    dropout: float = 0.0
    bridge_hidden: Optional[list] = None  #: Bi-DFCL bridge widths (default: ``hidden``)
    #: options whose cost heads output exactly 0 (None: every option whose logged costs in the
    #: training rows are all zero, e.g. a free option 0; [] for none)
    free_options: Optional[list] = None


@dataclass
class TrainConfig:
    """``[train]``: what every method reads (the decision loss and its options: DFCL and Bi-DFCL)."""

    method: str = "tsm"  #: a registered method (bidfcl.train.METHODS): tsm | dfcl | bidfcl
    epochs: int = 20
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    budget_fraction: float = 0.3  #: training budget per capita as a share of the largest arm's mean cost
    #: dfcl / bidfcl: train the decision loss at several budget shares (mean of the losses) instead
    #: of budget_fraction alone
    budget_fractions: Optional[list] = None
    #: dfcl / bidfcl: absolute training budget(s) instead of budget_fraction(s), in ``budget_unit``:
    #: share (like budget_fraction) | per_capita | total (spread over the RCT split's rows)
    budgets: Optional[list] = None
    budget_unit: str = "share"
    #: auto (CUDA when present, else CPU) | cpu | cuda | cuda:N: models, batches, solver and losses
    device: str = "auto"
    # the decision loss of dfcl (its objective) and bidfcl (its upper loss)
    #: a registered decision loss (bidfcl.objectives.DECISION_LOSSES): ppl | pifd (dfcl also dpl | mer | difd)
    loss: str = "ppl"
    tau: float = 1.0  #: softmax temperature of ppl / mer
    clip: Optional[float] = None  #: pifd / difd gap clip h (None = none)
    warm_start_epochs: int = 5  #: dfcl / bidfcl: prediction-loss epochs before the decision loss


@dataclass
class TsmConfig:
    """``[tsm]``: read by the two-stage method only."""

    data: str = "rct"  #: rows TSM fits: rct | obs | pooled


@dataclass
class DfclConfig:
    """``[dfcl]``: read by DFCL only."""

    #: revenue = the decision loss reaches the revenue heads only and the cost heads keep
    #: their prediction loss (a cost model that stays calibrated); both = the paper's loss on both
    decision_heads: str = "revenue"
    lams: Optional[list] = None  #: dual-loss multiplier grid (None: lam* at 5 budget shares)
    alpha: float = 0.0  #: weight of the prediction (MSE) loss added to the decision loss


@dataclass
class BidfclConfig:
    """``[bidfcl]``: read by Bi-DFCL only."""

    teacher_epochs: int = 20  #: epochs of the RCT teacher (TSM on RCT)
    #: a bridge step every this many target batches (was 5; docs/decision-quality.md section 5)
    bridge_every: int = 20
    #: hypergradient = "unrolled": differentiated inner SGD steps (``inner_lr``) per bridge step
    unrolled_steps: int = 20
    inner_steps: int = 0  #: cg: Adam steps of L_low from a copy of the target before the hypergradient (paper: 5)
    cg_iters: int = 3  #: CG iterations per bridge step (warm-started: the solve continues across steps; was 10)
    cg_tol: float = 1e-6
    damping: float = 0.1  #: added to the curvature in the CG solve (the lower problem's proximal weight)
    cg_warm_start: bool = True  #: start each CG solve from the previous bridge step's solution
    bridge_lr: float = (
        4e-3  #: Adam step of the bridge (was 1e-3 at bridge_every = 5; 1e-2: see docs/decision-quality.md)
    )
    learn_bridge: bool = True  #: false: gates stay at their start (1/2; factual weight 1), no bridge steps
    gate_factual: bool = True  #: gates on the factual (logged) cells too: weight 2 sigmoid(logit), 1 at start
    hypergradient: str = "cg"  #: cg | unrolled
    #: cg: gauss-newton (the PSD Gauss-Newton matrix; the default since it was what "auto" used in
    #: 92% of bridge steps) | auto (the exact Hessian where CG finds it positive definite, i.e. at a
    #: lower solution; else Gauss-Newton; the default before) | hessian (exact double backward)
    curvature: str = "gauss-newton"
    inner_lr: float = 0.01  #: unrolled: SGD step of the differentiated inner steps
    bridge_mode: str = "gate"  #: gate (per cell distillation gates) | weight (per-row sample weights)
    rct_batch_size: int = 4096  #: RCT rows drawn per upper-loss evaluation (0 = all RCT rows)


#: keys that were in ``[train]`` before the per-method sections: old key -> its new place(s)
MOVED_TRAIN_KEYS = {"data": ("tsm.data",), "k": ("bidfcl.bridge_every", "bidfcl.unrolled_steps")}
MOVED_TRAIN_KEYS.update({f.name: (f"dfcl.{f.name}",) for f in fields(DfclConfig)})
MOVED_TRAIN_KEYS.update(
    {f.name: (f"bidfcl.{f.name}",) for f in fields(BidfclConfig) if f.name not in ("bridge_every", "unrolled_steps")}
)


def _moved_message(key: str) -> str:
    new = MOVED_TRAIN_KEYS[key]
    if key == "k":
        return (
            "train.k moved: use bidfcl.bridge_every (a bridge step every k target batches) or "
            "bidfcl.unrolled_steps (the unrolled hypergradient's inner steps); k meant both before"
        )
    return f"train.{key} moved: use {new[0]} (section [{new[0].split('.')[0]}])"


def upgrade_run_config(raw: dict) -> dict:
    """A run config dict written before the per-method sections (a checkpoint's or model file's
    ``run_config``) in today's layout: each key of :data:`MOVED_TRAIN_KEYS` found in ``train``
    goes to its section (``train.k`` to both ``bidfcl.bridge_every`` and ``bidfcl.unrolled_steps``,
    the two things it meant). Other dicts are returned as they are (a copy)."""
    out = copy.deepcopy(raw)
    train = out.get("train")
    if not isinstance(train, dict):
        return out
    for key in [k for k in train if k in MOVED_TRAIN_KEYS]:
        value = train.pop(key)
        for dotted in MOVED_TRAIN_KEYS[key]:
            section, name = dotted.split(".")
            out.setdefault(section, {})[name] = value
    return out


@dataclass
class EvalConfig:
    n_budgets: int = 10  #: budget levels, evenly spaced in (0, largest arm's mean cost)
    #: explicit evaluation (and model-selection) budgets instead of the n_budgets levels, e.g. the
    #: deployment budget(s); their unit is ``budget_unit``
    budgets: Optional[list] = None
    #: unit of ``budgets``: share (of the largest arm's mean cost, like train.budget_fraction) |
    #: per_capita | total (divided by the scored split's rows)
    budget_unit: str = "share"
    split: str = "test"
    select: str = "eom"  #: model selection on validation: eom | loss | last
    every: int = 1  #: validate every this many epochs


@dataclass
class OutputConfig:
    dir: str = "runs/bidfcl"
    checkpoint_every: int = 0  #: also checkpoint every this many batches (0 = at epoch ends only)
    progress: str = "auto"  #: auto | bar | lines | none
    threads: int = 0  #: torch threads (0 = leave torch's setting)


@dataclass
class ExperimentConfig:
    methods: list = field(
        default_factory=lambda: ["tsm-rct", "tsm-obs", "tsm-pooled", "dfcl-ppl", "bidfcl-ppl", "bidfcl-pifd"]
    )
    seeds: list = field(default_factory=lambda: [0, 1, 2, 3, 4])
    reference: str = "tsm-rct"  #: EOM normaliser (= 1.0000) and the paired-test baseline
    overrides: dict = field(default_factory=dict)  #: per method: {"section.key": value}


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tsm: TsmConfig = field(default_factory=TsmConfig)
    dfcl: DfclConfig = field(default_factory=DfclConfig)
    bidfcl: BidfclConfig = field(default_factory=BidfclConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, overrides: dict) -> "RunConfig":
        """A copy with ``{"section.key": value}`` overrides applied (checked like a file)."""
        d = self.to_dict()
        for dotted, value in overrides.items():
            if "." not in dotted:
                raise ConfigError(f"bidfcl config: expected an override key 'section.key', got {dotted!r}")
            section, key = dotted.split(".", 1)
            if section not in d:
                raise ConfigError(f"bidfcl config: unknown section [{section}] in override {dotted!r}")
            d[section][key] = value
        return config_from_dict(d)


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "tsm": TsmConfig,
    "dfcl": DfclConfig,
    "bidfcl": BidfclConfig,
    "eval": EvalConfig,
    "output": OutputConfig,
    "experiment": ExperimentConfig,
}
#: the sections a run's result depends on (a resumed run must share them with its checkpoint)
RUN_SECTIONS = ("data", "model", "train", "tsm", "dfcl", "bidfcl", "eval")

# expected kinds for keys whose default is None (the default tells the kind otherwise)
_KINDS = {
    "n_rct": int,
    "n_obs": int,
    "n_val": int,
    "n_test": int,
    "n_features": int,
    "n_options": int,
    "seed": int,
    "world_seed": int,
    "outcome": str,
    "dtype": str,
    "hidden_confounder": bool,
    "propensity": list,
    "obs_arm_shares": list,
    "confounding": float,
    "selection": float,
    "base_scale": float,
    "uplift_scale": float,
    "cost_scale": float,
    "cost_power": float,
    "u_strength": float,
    "revenue_noise": float,
    "cost_noise": float,
    "revenue_tail": float,
    "scenario": str,
    "rct": str,
    "obs": str,
    "val": str,
    "test": str,
    "features": list,
    "propensity_column": str,
    "cost_output": str,
    "bridge_hidden": list,
    "free_options": list,
    "budgets": list,
    "budget_fractions": list,
    "clip": float,
    "lams": list,
}


def _kind_name(kind) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", list: "a list", dict: "a table"}[
        kind
    ]


def _check_kind(section: str, key: str, value: Any, kind) -> Any:
    where = f"{section}.{key}"
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"bidfcl config: expected {where} to be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"bidfcl config: expected {where} to be finite, got {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"bidfcl config: expected {where} to be an integer, got {value!r}")
        return value
    if kind is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"bidfcl config: expected {where} to be a list, got {value!r}")
        return value
    if not isinstance(value, kind):
        raise ConfigError(f"bidfcl config: expected {where} to be {_kind_name(kind)}, got {value!r}")
    return value


def _section(name: str, cls, raw: Any):
    if not isinstance(raw, dict):
        raise ConfigError(f"bidfcl config: expected [{name}] to be a table, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    default = cls()
    values = {}
    for key, value in raw.items():
        if name == "train" and key in MOVED_TRAIN_KEYS:
            raise ConfigError("bidfcl config: " + _moved_message(key))
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else f" (known keys: {', '.join(known)})"
            raise ConfigError(f"bidfcl config: unknown key {key!r} in [{name}]{extra}")
        if value is None:
            values[key] = None
            continue
        d = getattr(default, key)
        kind = _KINDS.get(key) if d is None else (float if isinstance(d, float) else type(d))
        values[key] = _check_kind(name, key, value, kind) if kind is not None else value
    return cls(**values)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError("bidfcl config: " + message)


#: units of ``train.budgets`` and ``eval.budgets`` (converted by ``evaluate.per_capita_budgets``)
BUDGET_UNITS = budget_units.CONFIG_UNITS  #: the units a config budget may be given in


def _check_budgets(section: str, budgets, unit: str) -> None:
    """``[section] budgets`` (None, or a non-empty list of finite numbers > 0) and ``budget_unit``."""
    _require(unit in BUDGET_UNITS, f"expected {section}.budget_unit in {list(BUDGET_UNITS)}, got {unit!r}")
    if budgets is not None:
        _require(
            len(budgets) > 0
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in budgets
            ),
            f"expected {section}.budgets to be a non-empty list of finite numbers > 0, got {budgets!r}",
        )


def _validate(cfg: RunConfig) -> None:
    d, m, t, e, o, x = cfg.data, cfg.model, cfg.train, cfg.eval, cfg.output, cfg.experiment
    ts, df, bi = cfg.tsm, cfg.dfcl, cfg.bidfcl
    _require(d.source in ("synthetic", "files"), f"expected data.source 'synthetic' or 'files', got {d.source!r}")
    if d.scenario is not None:
        from ..data.scenarios import SCENARIOS, unknown_scenario_message

        _require(
            d.source == "synthetic",
            f"data.scenario = {d.scenario!r} needs data.source = 'synthetic' "
            f"(a scenario is a set of make_marketing keywords), got {d.source!r}",
        )
        _require(d.scenario in SCENARIOS, f"data.scenario: {unknown_scenario_message(d.scenario)}")
    if d.source == "files":
        _require(d.rct is not None, "data.source = 'files' needs data.rct (path of the RCT table)")
        _require(bool(d.features), "data.source = 'files' needs data.features (a list of feature columns)")
        for key in ("rct", "obs", "val", "test"):
            path = getattr(d, key)
            _require(path is None or os.path.exists(path), f"data.{key}: file {path!r} does not exist")
    _require(
        all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in m.hidden),
        f"expected model.hidden to be positive integers, got {m.hidden!r}",
    )
    if m.bridge_hidden is not None:
        _require(
            all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in m.bridge_hidden),
            f"expected model.bridge_hidden to be positive integers, got {m.bridge_hidden!r}",
        )
    if m.free_options is not None:
        _require(
            all(isinstance(j, int) and not isinstance(j, bool) and j >= 0 for j in m.free_options),
            f"expected model.free_options to be option indices >= 0, got {m.free_options!r}",
        )
    from ..models import ACTIVATIONS, OUTPUTS

    _require(m.activation in ACTIVATIONS, f"expected model.activation in {sorted(ACTIVATIONS)}, got {m.activation!r}")
    for key in ("output", "cost_output"):
        v = getattr(m, key)
        _require(v is None or v in OUTPUTS, f"expected model.{key} in {list(OUTPUTS)}, got {v!r}")
    _require(0.0 <= m.dropout < 1.0, f"expected model.dropout in [0, 1), got {m.dropout!r}")
    _require(t.method in METHODS, f"expected train.method in {list(METHODS)} (bidfcl.train.METHODS), got {t.method!r}")
    _require(ts.data in TSM_DATA, f"expected tsm.data in {list(TSM_DATA)}, got {ts.data!r}")
    _require(t.epochs >= 0, f"expected train.epochs >= 0, got {t.epochs}")
    _require(t.batch_size > 0, f"expected train.batch_size > 0, got {t.batch_size}")
    for where, sec, keys in (("train", t, ("lr", "tau")), ("bidfcl", bi, ("bridge_lr", "inner_lr"))):
        for key in keys:
            _require(getattr(sec, key) > 0, f"expected {where}.{key} > 0, got {getattr(sec, key)}")
    for where, sec, keys in (
        ("train", t, ("weight_decay",)),
        ("dfcl", df, ("alpha",)),
        ("bidfcl", bi, ("damping", "cg_tol")),
    ):
        for key in keys:
            _require(getattr(sec, key) >= 0, f"expected {where}.{key} >= 0, got {getattr(sec, key)}")
    _require(0.0 < t.budget_fraction <= 1.0, f"expected train.budget_fraction in (0, 1], got {t.budget_fraction}")
    _require(
        t.loss in DECISION_LOSSES,
        f"expected train.loss in {list(DECISION_LOSSES)} (bidfcl.objectives.DECISION_LOSSES), got {t.loss!r}",
    )
    if METHODS[t.method].decision_loss:
        accepted = decision_losses_for(t.method)
        _require(t.loss in accepted, f"expected train.loss in {accepted} for method {t.method!r}, got {t.loss!r}")
    _require(t.clip is None or t.clip > 0, f"expected train.clip > 0 or absent, got {t.clip}")
    if df.lams is not None:
        _require(
            len(df.lams) > 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in df.lams),
            f"expected dfcl.lams to be numbers >= 0, got {df.lams!r}",
        )
    _require(t.warm_start_epochs >= 0, f"expected train.warm_start_epochs >= 0, got {t.warm_start_epochs}")
    for key in ("teacher_epochs", "cg_iters", "rct_batch_size", "inner_steps", "unrolled_steps"):
        _require(getattr(bi, key) >= 0, f"expected bidfcl.{key} >= 0, got {getattr(bi, key)}")
    _require(bi.bridge_every >= 1, f"expected bidfcl.bridge_every >= 1, got {bi.bridge_every}")
    _require(
        bi.hypergradient in ("cg", "unrolled"),
        f"expected bidfcl.hypergradient 'cg' or 'unrolled', got {bi.hypergradient!r}",
    )
    _require(
        bi.curvature in ("auto", "hessian", "gauss-newton"),
        f"expected bidfcl.curvature 'auto', 'hessian' or 'gauss-newton', got {bi.curvature!r}",
    )
    _require(
        df.decision_heads in ("revenue", "both"),
        f"expected dfcl.decision_heads 'revenue' or 'both', got {df.decision_heads!r}",
    )
    _require(
        bi.bridge_mode in ("gate", "weight"), f"expected bidfcl.bridge_mode 'gate' or 'weight', got {bi.bridge_mode!r}"
    )
    _require(e.n_budgets >= 1, f"expected eval.n_budgets >= 1, got {e.n_budgets}")
    _check_budgets("eval", e.budgets, e.budget_unit)
    _require(
        isinstance(t.device, str)
        and (t.device in ("auto", "cpu", "cuda") or (t.device.startswith("cuda:") and t.device[5:].isdigit())),
        f"expected train.device 'auto', 'cpu', 'cuda' or 'cuda:N', got {t.device!r}",
    )
    _check_budgets("train", t.budgets, t.budget_unit)
    if t.budgets is not None:
        _require(t.budget_fractions is None, "give train.budgets or train.budget_fractions, not both")
    if t.budget_fractions is not None:
        _require(
            len(t.budget_fractions) > 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1 for v in t.budget_fractions),
            f"expected train.budget_fractions to be a non-empty list of numbers in (0, 1], got {t.budget_fractions!r}",
        )
    _require(e.split in ("rct", "val", "test"), f"expected eval.split in ['rct', 'val', 'test'], got {e.split!r}")
    _require(e.select in ("eom", "loss", "last"), f"expected eval.select in ['eom', 'loss', 'last'], got {e.select!r}")
    _require(e.every >= 1, f"expected eval.every >= 1, got {e.every}")
    _require(o.checkpoint_every >= 0, f"expected output.checkpoint_every >= 0, got {o.checkpoint_every}")
    _require(
        o.progress in ("auto", "bar", "lines", "none"),
        f"expected output.progress in ['auto', 'bar', 'lines', 'none'], got {o.progress!r}",
    )
    _require(o.threads >= 0, f"expected output.threads >= 0, got {o.threads}")
    _require(
        len(x.methods) > 0 and all(isinstance(v, str) for v in x.methods),
        f"expected experiment.methods to be a non-empty list of names, got {x.methods!r}",
    )
    _require(
        len(x.seeds) > 0 and all(isinstance(v, int) and not isinstance(v, bool) for v in x.seeds),
        f"expected experiment.seeds to be a non-empty list of integers, got {x.seeds!r}",
    )


def config_from_dict(raw: dict) -> RunConfig:
    """Check a parsed TOML document (or equivalent dict) and build a :class:`RunConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"bidfcl config: expected a table of sections, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    parts = {}
    for name, value in raw.items():
        if name not in _SECTIONS:
            hint = difflib.get_close_matches(name, _SECTIONS, n=1)
            extra = f" (did you mean [{hint[0]}]?)" if hint else f" (known sections: {', '.join(_SECTIONS)})"
            raise ConfigError(f"bidfcl config: unknown section [{name}]{extra}")
        parts[name] = _section(name, _SECTIONS[name], value)
    cfg = RunConfig(**parts)
    _validate(cfg)
    return cfg


def load_config(path: str | os.PathLike, overrides: Optional[dict] = None) -> RunConfig:
    """Read and check a TOML configuration file; relative data paths are taken from the file's folder."""
    if tomllib is None:
        raise ConfigError(NO_TOML_PARSER)
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ConfigError(f"bidfcl config: {path!r} is a folder, expected a TOML file (e.g. examples/bidfcl.toml)")
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"bidfcl config: file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"bidfcl config: {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"bidfcl config: {path} is not a text (TOML) file") from None
    except OSError as exc:
        raise ConfigError(f"bidfcl config: cannot read {path!r}: {exc.strerror or exc}") from None
    base = os.path.dirname(os.path.abspath(path))
    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("rct", "obs", "val", "test"):
            if isinstance(data.get(key), str) and not os.path.isabs(data[key]):
                data[key] = os.path.join(base, data[key])
    cfg = config_from_dict(raw)
    return cfg.replace(overrides) if overrides else cfg
