"""Shared by the tests of bidfcl.train (test_train_*.py, test_objectives.py): tiny run configs (the
tiny run data is the ``data`` fixture of tests/conftest.py)."""

import bidfcl
from bidfcl.train import config_from_dict

#: the tiny synthetic data of the ``data`` fixture (tests/conftest.py)
TINY = {"n_rct": 600, "n_obs": 1200, "n_val": 600, "n_test": 1000}


def cfg_of(train: dict, **sections) -> bidfcl.train.RunConfig:
    """A tiny run config: ``train`` keys over small defaults, other sections merged in."""
    raw = {
        "data": TINY,
        "model": {"hidden": [16, 8]},
        "train": {"batch_size": 128, "lr": 3e-3, **train},
        "output": {"progress": "none"},
    }
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return config_from_dict(raw)


def params(module) -> list:
    """Copies of a module's parameters and buffers."""
    return [p.detach().clone() for p in module.state_dict().values()]
