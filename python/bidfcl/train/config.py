"""Run configuration: a TOML file with sections ``[data]``, ``[model]``, ``[train]`` (what every
method reads), one section per method (``[tsm]``, ``[dfcl]``, ``[bidfcl]``: what only that method
reads), ``[eval]``, ``[output]`` (and ``[experiment]`` for ``bidfcl experiment``), checked key by key.

Every key has a default (below); a file only lists what it changes. Unknown sections or keys,
values of the wrong type and values out of range raise :class:`ConfigError` naming the key, what
was expected and what arrived (with a "did you mean" hint for misspelt keys). Keys that moved out
of ``[train]`` into a method's section (:func:`moved_train_keys`, e.g. ``train.k``) raise a
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
from ..data.scenarios import SCENARIOS, unknown_scenario_message
from ..models import ACTIVATIONS, OUTPUTS
from ..objectives import DECISION_LOSSES, decision_losses_for
from .registry import METHODS


def _toml_parser():
    """The TOML parser: the standard library's ``tomllib`` (Python >= 3.11), else ``tomli`` (the
    package it was taken from, with the same ``load``/``loads``/``TOMLDecodeError`` API; a dependency
    of bidfcl on Python 3.10), else None."""
    try:
        import tomllib as parser  # noqa: PLC0415 (the TOML parser that exists on this Python)
    except ModuleNotFoundError:
        try:
            import tomli as parser  # noqa: PLC0415 (the TOML parser that exists on this Python)
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
    "EvalConfig",
    "OutputConfig",
    "ExperimentConfig",
    "load_config",
    "config_from_dict",
    "upgrade_run_config",
    "moved_train_keys",
    "run_sections",
    "require",
    "require_keys",
    "require_choice",
]

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


def moved_train_keys() -> dict:
    """Keys that were in ``[train]`` before the per-method sections: old key -> its new place(s)
    ``"section.key"``: every key of a registered method's section under its own name, and the keys
    a method renamed (``train.k`` -> ``bidfcl.bridge_every`` and ``bidfcl.unrolled_steps``)."""
    return {key: tuple(new) for key, new in _moves().items()}


def _moves() -> dict:
    """old ``[train]`` key -> {``"section.key"``: what it means, or None}."""
    out = {}
    for name, spec in METHODS.items():
        if spec.config is None:
            continue
        renamed_to = {new for news in spec.renamed.values() for new in news}
        out.update({f.name: {f"{name}.{f.name}": None} for f in fields(spec.config) if f.name not in renamed_to})
        out.update({old: {f"{name}.{new}": why for new, why in news.items()} for old, news in spec.renamed.items()})
    return out


def _moved_message(key: str) -> str:
    new = _moves()[key]
    if len(new) > 1:
        uses = " or ".join(f"{dotted} ({why})" if why else dotted for dotted, why in new.items())
        return f"train.{key} moved: use {uses}; {key} meant each of them before"
    dotted = next(iter(new))
    return f"train.{key} moved: use {dotted} (section [{dotted.split('.')[0]}])"


def upgrade_run_config(raw: dict) -> dict:
    """A run config dict written before the per-method sections (a checkpoint's or model file's
    ``run_config``) in today's layout: each key of :func:`moved_train_keys` found in ``train``
    goes to its section (``train.k`` to both ``bidfcl.bridge_every`` and ``bidfcl.unrolled_steps``,
    the two things it meant). Other dicts are returned as they are (a copy)."""
    out = copy.deepcopy(raw)
    train = out.get("train")
    if not isinstance(train, dict):
        return out
    moved = moved_train_keys()
    for key in [k for k in train if k in moved]:
        value = train.pop(key)
        for dotted in moved[key]:
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
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    #: the registered methods' own sections, name -> section (each read as ``cfg.<name>``, e.g.
    #: ``cfg.bidfcl.bridge_every``); every registered section is present, at its defaults unless set
    methods: dict = field(default_factory=lambda: {name: cls() for name, cls in method_sections().items()})

    def __getattr__(self, name: str):
        # only reached when ordinary lookup fails: a method's section
        methods = self.__dict__.get("methods")
        if methods is not None and name in methods:
            return methods[name]
        raise AttributeError(f"RunConfig has no section {name!r} (sections: {', '.join(all_sections())})")

    def __setattr__(self, name: str, value) -> None:
        methods = self.__dict__.get("methods")
        if methods is not None and name in methods:
            methods[name] = value
        else:
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict:
        """``{section: {key: value}}`` in file order: data, model, train, each method's section, eval,
        output, experiment."""
        out = {name: asdict(getattr(self, name)) for name in _SHARED_BEFORE}
        out.update({name: asdict(section) for name, section in self.methods.items()})
        out.update({name: asdict(getattr(self, name)) for name in _SHARED_AFTER})
        return out

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


_SHARED = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "output": OutputConfig,
    "experiment": ExperimentConfig,
}
_SHARED_BEFORE, _SHARED_AFTER = ("data", "model", "train"), ("eval", "output", "experiment")


def method_sections() -> dict:
    """name -> section dataclass of every registered method that has one (registration order)."""
    return {name: spec.config for name, spec in METHODS.items() if spec.config is not None}


def all_sections() -> dict:
    """Every section a config may hold, in file order: name -> dataclass."""
    out = {name: _SHARED[name] for name in _SHARED_BEFORE}
    out.update(method_sections())
    out.update({name: _SHARED[name] for name in _SHARED_AFTER})
    return out


def run_sections() -> tuple:
    """The sections a run's result depends on (a resumed run must share them with its checkpoint):
    data, model, train, every method's own section, eval."""
    return (*_SHARED_BEFORE, *method_sections(), "eval")


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
        if name == "train" and key in moved_train_keys():
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


def require(cond: bool, message: str) -> None:
    """Raise ``ConfigError("bidfcl config: " + message)`` unless ``cond``: the checks of every
    section, including those a method registers for its own (:func:`bidfcl.train.register_method`)."""
    if not cond:
        raise ConfigError("bidfcl config: " + message)


_require = require


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
    _require(d.source in ("synthetic", "files"), f"expected data.source 'synthetic' or 'files', got {d.source!r}")
    if d.scenario is not None:
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

    _require(m.activation in ACTIVATIONS, f"expected model.activation in {sorted(ACTIVATIONS)}, got {m.activation!r}")
    for key in ("output", "cost_output"):
        v = getattr(m, key)
        _require(v is None or v in OUTPUTS, f"expected model.{key} in {list(OUTPUTS)}, got {v!r}")
    _require(0.0 <= m.dropout < 1.0, f"expected model.dropout in [0, 1), got {m.dropout!r}")
    _require(t.method in METHODS, f"expected train.method in {list(METHODS)} (bidfcl.train.METHODS), got {t.method!r}")
    _require(t.epochs >= 0, f"expected train.epochs >= 0, got {t.epochs}")
    _require(t.batch_size > 0, f"expected train.batch_size > 0, got {t.batch_size}")
    require_keys("train", t, lambda v: v > 0, "> 0", "lr", "tau")
    require_keys("train", t, lambda v: v >= 0, ">= 0", "weight_decay")
    _require(0.0 < t.budget_fraction <= 1.0, f"expected train.budget_fraction in (0, 1], got {t.budget_fraction}")
    _require(
        t.loss in DECISION_LOSSES,
        f"expected train.loss in {list(DECISION_LOSSES)} (bidfcl.objectives.DECISION_LOSSES), got {t.loss!r}",
    )
    if METHODS[t.method].decision_loss:
        accepted = decision_losses_for(t.method)
        _require(t.loss in accepted, f"expected train.loss in {accepted} for method {t.method!r}, got {t.loss!r}")
    _require(t.clip is None or t.clip > 0, f"expected train.clip > 0 or absent, got {t.clip}")
    _require(t.warm_start_epochs >= 0, f"expected train.warm_start_epochs >= 0, got {t.warm_start_epochs}")
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
    for name, spec in METHODS.items():  # each method checks its own section
        if spec.config is not None and spec.check is not None:
            spec.check(cfg.methods[name], cfg)


def require_keys(section: str, values, ok, expected: str, *keys: str) -> None:
    """``require(ok(values.key), "expected section.key <expected>, got ...")`` for each key."""
    for key in keys:
        v = getattr(values, key)
        require(ok(v), f"expected {section}.{key} {expected}, got {v}")


def require_choice(section: str, values, key: str, choices) -> None:
    """``values.key`` must be one of ``choices`` (the message lists them)."""
    v = getattr(values, key)
    require(v in choices, f"expected {section}.{key} in {list(choices)}, got {v!r}")


def config_from_dict(raw: dict) -> RunConfig:
    """Check a parsed TOML document (or equivalent dict) and build a :class:`RunConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"bidfcl config: expected a table of sections, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    sections = all_sections()
    parts = {}
    for name, value in raw.items():
        if name not in sections:
            hint = difflib.get_close_matches(name, sections, n=1)
            extra = f" (did you mean [{hint[0]}]?)" if hint else f" (known sections: {', '.join(sections)})"
            raise ConfigError(f"bidfcl config: unknown section [{name}]{extra}")
        parts[name] = _section(name, sections[name], value)
    methods = {name: parts.pop(name) if name in parts else cls() for name, cls in method_sections().items()}
    cfg = RunConfig(**parts, methods=methods)
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
