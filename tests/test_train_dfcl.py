"""bidfcl.train.dfcl: the DFCL trainer improves its decision loss and keeps its cost model feasible."""

import pytest
from _train_common import cfg_of

from bidfcl.train import DfclTrainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("loss", ["ppl", "pifd", "mer"])
def test_dfcl_improves_its_decision_loss(data, loss):
    from bidfcl.objectives import decision_loss

    cfg = cfg_of(
        {"method": "dfcl", "loss": loss, "epochs": 4, "warm_start_epochs": 3, "tau": 0.3, "lr": 3e-3},
        eval={"select": "last"},
    )
    tr = DfclTrainer(cfg, data)
    rows = data.rct
    phases = tr.phases()
    seen = {}
    orig_begin = phases[1].begin

    def begin():
        orig_begin()
        r, c = tr.model.predict(rows.x)
        seen["before"] = float(decision_loss(loss, r, c, rows, tr.train_budget, options={"tau": 0.3}, lams=tr.lams))

    phases[1].begin = begin
    tr.phases = lambda: phases
    tr.fit()
    r, c = tr.model.predict(rows.x)
    after = float(decision_loss(loss, r, c, rows, tr.train_budget, options={"tau": 0.3}, lams=tr.lams))
    assert after < seen["before"]


def test_dfcl_alpha_mixes_prediction_loss(data):
    cfg = cfg_of({"method": "dfcl", "loss": "ppl", "epochs": 1, "warm_start_epochs": 0}, dfcl={"alpha": 0.5})
    res = DfclTrainer(cfg, data).fit()
    assert {"ppl", "mse"} <= set(res["history"][-1])


def test_dfcl_keeps_its_cost_model_feasible_at_every_budget(data):
    """The decision loss reaches only the revenue heads; the cost heads keep fitting the logged costs
    and the free option's cost is exactly zero, so every evaluated budget stays feasible."""
    cfg = cfg_of({"method": "dfcl", "loss": "ppl", "epochs": 4, "warm_start_epochs": 2, "lr": 1e-2})
    tr = DfclTrainer(cfg, data)
    assert tr.model.free_options == [0]
    res = tr.fit()
    ev = res["evaluation"]
    assert ev["n_infeasible"] == 0 and all(ev["feasible"])
    assert "cost_mse" in res["history"][-1]
