"""Shared by the tests of bidfcl.train (test_train_*.py, test_objectives.py): tiny run data and configs."""

import importlib.util

import pytest

import bidfcl
from bidfcl.train import config_from_dict, load_run_data

HAVE_LOSSES = importlib.util.find_spec("bidfcl.losses") is not None
HAVE_IMPLICIT = importlib.util.find_spec("bidfcl.implicit") is not None
needs_losses = pytest.mark.skipif(not HAVE_LOSSES, reason="bidfcl.losses not in this build")
needs_bilevel = pytest.mark.skipif(not (HAVE_LOSSES and HAVE_IMPLICIT), reason="bidfcl.losses/implicit not in this build")

TINY = {"n_rct": 600, "n_obs": 1200, "n_val": 600, "n_test": 1000}


@pytest.fixture(scope="module")
def data():
    """The tiny synthetic run data (RCT, OBS, validation, test), made once per test module."""
    cfg = config_from_dict({"data": TINY})
    return load_run_data(cfg.data)


def cfg_of(train: dict, **sections) -> bidfcl.train.RunConfig:
    """A tiny run config: ``train`` keys over small defaults, other sections merged in."""
    raw = {"data": TINY, "model": {"hidden": [16, 8]}, "train": {"batch_size": 128, "lr": 3e-3, **train},
           "output": {"progress": "none"}}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return config_from_dict(raw)


def params(module) -> list:
    """Copies of a module's parameters and buffers."""
    return [p.detach().clone() for p in module.state_dict().values()]
