"""Training and experiments on data the caller holds (no config file), and absolute training budgets."""

import numpy as np
import pytest

from bidfcl.data import DataError, make_marketing
from bidfcl.train import ConfigError, make_trainer, run_data
from bidfcl.train.experiment import run_experiment

CFG = {
    "model": {"hidden": [8]},
    "train": {"method": "tsm", "epochs": 1, "batch_size": 256},
    "tsm": {"data": "pooled"},
    "output": {"progress": "none"},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _arrays(ds):
    out = {"x": ds.x.numpy(), "treatment": ds.treatment.numpy(), "revenue": ds.revenue.numpy(), "cost": ds.cost.numpy()}
    if ds.propensity is not None:
        out["propensity"] = ds.propensity.numpy()
    return out


@pytest.fixture(scope="module")
def md():
    return make_marketing(n_rct=400, n_obs=800, n_val=300, n_test=300, seed=4)


def test_arrays_and_datasets_train_the_same_model(md):
    a = make_trainer(CFG, {"rct": md.rct, "obs": md.obs, "val": md.val, "test": md.test}).fit()
    b = make_trainer(CFG, run_data(_arrays(md.rct), _arrays(md.obs), _arrays(md.val), _arrays(md.test))).fit()
    assert a["evaluation"]["eom"] == b["evaluation"]["eom"]
    assert "true_value" not in b["evaluation"]  # no ground truth with the caller's data


def test_experiment_with_data_per_seed(md):
    other = make_marketing(n_rct=400, n_obs=800, n_val=300, n_test=300, seed=5)
    cfg = dict(CFG, experiment={"methods": ["tsm-rct", "tsm-pooled"], "seeds": [0, 1], "reference": "tsm-rct"})
    split = lambda d: {"rct": d.rct, "obs": d.obs, "val": d.val, "test": d.test}  # noqa: E731
    by_dict = run_experiment(cfg, data={0: split(md), 1: split(other)}, log=lambda m: None)
    by_fn = run_experiment(cfg, data=lambda s: split(md if s == 0 else other), log=lambda m: None)
    same = run_experiment(cfg, data=split(md), log=lambda m: None)
    ev = lambda out, s: [r["evaluation"]["eom"] for r in out["runs"] if r["seed"] == s]  # noqa: E731
    assert ev(by_dict, 1) == ev(by_fn, 1) and ev(by_dict, 0) == ev(same, 0)
    assert ev(by_dict, 1) != ev(same, 1)  # seed 1 really trained on the other sample
    with pytest.raises(ConfigError, match="no entry for seed 1"):
        run_experiment(cfg, data={0: split(md)}, log=lambda m: None)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"x": np.zeros((3, 2))}, "missing"),
        ({"x": np.zeros((3, 2)), "treatment": [0.5, 1, 0], "revenue": [1, 2, 3], "cost": [0, 1, 0]}, "whole"),
        (
            {
                "x": np.zeros((3, 2)),
                "treatment": [0, 1, 0],
                "revenue": [1, 2, 3],
                "cost": [0, 1, 0],
                "weight": [1, 1, 1],
            },
            "unknown",
        ),
        ("rows.csv", "expected an UpliftDataset or a dict"),
    ],
)
def test_bad_in_memory_data(bad, match):
    with pytest.raises(DataError, match=match):
        run_data(bad)


def test_splits_must_agree(md):
    with pytest.raises(DataError, match="same features"):
        run_data(md.rct, obs=md.obs._replace(x=md.obs.x[:, :3]))
    with pytest.raises(DataError, match="rct.*required"):
        make_trainer(CFG, {"obs": md.obs})


def test_absolute_training_budgets(md):
    cfg = {
        "train": {"method": "dfcl", "epochs": 1, "warm_start_epochs": 0, "budgets": [3.0], "budget_unit": "total"},
        "model": {"hidden": [8]},
        "output": {"progress": "none"},
    }
    t = make_trainer(cfg, {"rct": md.rct, "val": md.val})
    assert t.train_budgets == [pytest.approx(3.0 / len(md.rct))]
    cfg["train"].update(budgets=[0.05, 0.1], budget_unit="per_capita")
    assert make_trainer(cfg, {"rct": md.rct}).train_budgets == [0.05, 0.1]
    share = dict(cfg["train"], budgets=None, budget_unit="share", budget_fraction=0.3)
    same = dict(cfg["train"], budgets=[0.3], budget_unit="share")
    a = make_trainer(dict(cfg, train=share), {"rct": md.rct}).train_budgets
    b = make_trainer(dict(cfg, train=same), {"rct": md.rct}).train_budgets
    assert a == b
    with pytest.raises(ConfigError, match="train.budget_unit"):
        make_trainer(dict(cfg, train=dict(cfg["train"], budget_unit="euros")), {"rct": md.rct})
    with pytest.raises(ConfigError, match="train.budgets"):
        make_trainer(dict(cfg, train=dict(cfg["train"], budgets=[-1.0])), {"rct": md.rct})
