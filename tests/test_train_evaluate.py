"""bidfcl.train.evaluate: evaluation budgets in each unit and the metrics of a trained model."""

import pytest
from _train_common import TINY, cfg_of

from bidfcl.train import TsmTrainer, config_from_dict, load_run_data, make_trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_two_options_report_aucc():
    cfg = config_from_dict(
        {
            "data": {**TINY, "n_options": 2},
            "model": {"hidden": [8]},
            "train": {"epochs": 2, "batch_size": 128},
            "output": {"progress": "none"},
        }
    )
    res = make_trainer(cfg, load_run_data(cfg.data)).fit()
    assert 0.0 < res["evaluation"]["aucc"] < 1.0


def test_eval_budgets_in_each_unit(data):
    from bidfcl.train.datasets import max_arm_cost
    from bidfcl.train.evaluate import eval_budgets

    ds = data.val
    top = max_arm_cost(ds)
    ev = config_from_dict({"eval": {"budgets": [0.3]}}).eval
    assert eval_budgets(ev, ds) == pytest.approx([0.3 * top])
    ev = config_from_dict({"eval": {"budgets": [0.25, 0.5], "budget_unit": "per_capita"}}).eval
    assert eval_budgets(ev, ds) == [0.25, 0.5]
    ev = config_from_dict({"eval": {"budgets": [60.0], "budget_unit": "total"}}).eval
    assert eval_budgets(ev, ds) == pytest.approx([60.0 / len(ds)])
    assert len(eval_budgets(config_from_dict({}).eval, ds)) == 10
    # selection uses them too
    cfg = cfg_of({"epochs": 1}, eval={"budgets": [0.3, 0.6]})
    tr = TsmTrainer(cfg, data)
    assert tr.val_budgets == pytest.approx([0.3 * max_arm_cost(tr.val_ds), 0.6 * max_arm_cost(tr.val_ds)])
    assert len(tr.fit()["evaluation"]["budgets"]) == 2
