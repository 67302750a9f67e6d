"""Trainers (TSM, DFCL, Bi-DFCL) on a shared loop, their configuration, evaluation and experiments.

from bidfcl.train import load_config, load_run_data, make_trainer
cfg = load_config("cfg.toml")
result = make_trainer(cfg, load_run_data(cfg.data), out_dir=cfg.output.dir).fit()
"""

from __future__ import annotations

from typing import Optional

from .config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    OutputConfig,
    RunConfig,
    TrainConfig,
    config_from_dict,
    load_config,
)
from .datasets import RunData, as_run_data, load_run_data, run_data
from .evaluate import budget_levels, evaluate_model, evaluate_predictions
from .loop import Phase, Progress, Trainer, factual_loss, load_model, save_model
from .tsm import TsmConfig, TsmTrainer
from .dfcl import DfclConfig, DfclTrainer
from .bilevel import BidfclConfig, BidfclTrainer
from .registry import METHODS, method_spec, presets, register_method

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
    "config_from_dict",
    "load_config",
    "RunData",
    "run_data",
    "load_run_data",
    "budget_levels",
    "evaluate_model",
    "evaluate_predictions",
    "Phase",
    "Progress",
    "Trainer",
    "factual_loss",
    "load_model",
    "save_model",
    "TsmTrainer",
    "DfclTrainer",
    "BidfclTrainer",
    "METHODS",
    "register_method",
    "method_spec",
    "presets",
    "make_trainer",
]


def make_trainer(cfg, data, *, out_dir: Optional[str] = None, progress: Optional[Progress] = None, **kw) -> Trainer:
    """The trainer of ``cfg.train.method``, a method registered in :data:`METHODS` (extra keywords,
    e.g. ``teacher=``, go to Bi-DFCL).

    ``cfg``: a :class:`RunConfig` or a dict of sections (checked like a file, e.g.
    ``{"train": {"method": "dfcl"}}``); ``data``: a :class:`RunData` (``load_run_data(cfg.data)``, or
    :func:`run_data` of data in memory) or a dict ``{"rct": ..., "obs": ..., "val": ..., "test": ...}``
    of :class:`~bidfcl.data.UpliftDataset` s or array dicts.
    """
    if isinstance(cfg, dict):
        cfg = config_from_dict(cfg)
    elif not isinstance(cfg, RunConfig):
        raise ConfigError(
            f"bidfcl.train.make_trainer: expected cfg to be a RunConfig or a dict of config sections, "
            f"got {type(cfg).__name__}"
        )
    return METHODS[cfg.train.method].trainer(cfg, as_run_data(data), out_dir=out_dir, progress=progress, **kw)
