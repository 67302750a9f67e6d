"""bidfcl.train.tsm: TSM trains on its rows (RCT, OBS, pooled), writes its files, its model loads."""

import os

import pytest
import torch
from _train_common import cfg_of

from bidfcl.train import TsmTrainer, load_model
from bidfcl.train.evaluate import budget_levels, evaluate_model
from bidfcl.train.loop import factual_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("which,rows", [("rct", 600), ("obs", 1200), ("pooled", 1800)])
def test_tsm_fits_its_rows_and_improves(data, which, rows):
    cfg = cfg_of({"method": "tsm", "epochs": 4}, tsm={"data": which}, eval={"select": "last"})
    tr = TsmTrainer(cfg, data)
    assert len(tr.rows) == rows
    before = float(factual_loss(*tr.model.predict(tr.rows.x), tr.rows))
    res = tr.fit()
    after = float(factual_loss(*tr.model.predict(tr.rows.x), tr.rows))
    assert after < 0.95 * before
    ev = res["evaluation"]
    assert len(ev["eom"]) == 10 and ev["budgets"] == sorted(ev["budgets"])
    assert all(0.0 <= g <= 1.2 for g in ev["gain_share"])
    assert all(
        o >= v - 1e-9
        for o, v, c, b in zip(ev["oracle_value"], ev["true_value"], ev["true_cost"], ev["budgets"])
        if c <= b
    )


def test_tsm_writes_files_and_model_loads(tmp_path, data):
    cfg = cfg_of({"method": "tsm", "epochs": 2})
    res = TsmTrainer(cfg, data, out_dir=str(tmp_path)).fit()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "history.csv", "metrics.json", "model.pt"]
    model, meta = load_model(str(tmp_path / "model.pt"))
    ev = evaluate_model(model, data.test, budget_levels(data.test, 10), truth=data.marketing, split="test")
    assert ev["eom"] == res["evaluation"]["eom"]
    assert meta["run_config"]["train"]["method"] == "tsm"
    m2, _ = load_model(str(tmp_path / "checkpoint.pt"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))
