"""bidfcl.objectives: the decision losses of the trainers, their registry and Bi-DFCL's lower loss."""

import math

import pytest
import torch
from _train_common import cfg_of, params

from bidfcl.train import ConfigError, DfclTrainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_decision_loss_over_several_budgets_is_the_mean(data):
    from bidfcl.objectives import decision_loss

    torch.manual_seed(0)
    r = torch.rand(len(data.rct), data.n_options) + torch.arange(data.n_options) * 0.1
    c = torch.arange(data.n_options, dtype=torch.float32).expand_as(r).contiguous() * 0.2
    single = [decision_loss("ppl", r, c, data.rct, b) for b in (0.1, 0.3)]
    both = decision_loss("ppl", r, c, data.rct, [0.1, 0.3])
    torch.testing.assert_close(both, (single[0] + single[1]) / 2)


def test_decision_loss_leaves_out_budgets_with_an_infinite_multiplier(data, monkeypatch):
    """Seen on causalml data: cost heads that underflow to (denormal) zero make lam* infinite on a
    feasible budget; the decision loss leaves such budgets out instead of failing in ppl_loss."""
    import bidfcl.objectives as dfcl

    real = dfcl.solve_mckp_rct

    def one_infinite(*args, **kw):
        sol = real(*args, **kw)
        return sol._replace(
            lam=torch.cat([torch.full_like(sol.lam[:1], math.inf), sol.lam[1:]]), feasible=torch.ones_like(sol.feasible)
        )

    torch.manual_seed(0)
    r = torch.rand(len(data.rct), data.n_options)
    c = torch.arange(data.n_options, dtype=torch.float32).expand_as(r).contiguous() * 0.2
    monkeypatch.setattr(dfcl, "solve_mckp_rct", one_infinite)
    assert dfcl.decision_loss("ppl", r, c, data.rct, [0.1]) is None
    monkeypatch.setattr(dfcl, "solve_mckp_rct", real)
    expect = dfcl.decision_loss("ppl", r, c, data.rct, [0.3])
    monkeypatch.setattr(dfcl, "solve_mckp_rct", one_infinite)
    torch.testing.assert_close(dfcl.decision_loss("ppl", r, c, data.rct, [0.1, 0.3]), expect)


# ------------------------------------------------------------------ the decision-loss registry
def _toy_loss(r_hat, c_hat, treatment, revenue, lam, propensity=None, tau=1.0, *, check=True):
    """A new primal decision loss written in PyTorch alone: minus the IPW revenue of the softmax
    policy of the Lagrangian scores ``(r_hat - lam c_hat) / tau``, observed on the logged arm."""
    pi = torch.softmax((r_hat - lam.to(r_hat.dtype) * c_hat) / tau, dim=1)
    taken = pi.gather(1, treatment.unsqueeze(1)).squeeze(1)
    return -(taken * revenue.to(r_hat.dtype) / propensity.to(r_hat.dtype)).mean()


@pytest.fixture
def toy_loss():
    """Registers decision loss 'toy' (DFCL only, reads tau) for one test, with a record of its calls."""
    from bidfcl import objectives

    calls = []

    def toy(*args, **kw):
        calls.append((args, kw))
        return _toy_loss(*args, **kw)

    objectives.register_decision_loss(
        "toy", toy, kind="primal", options=("tau",), methods=("dfcl",), doc="test: softmax IPW revenue"
    )
    yield calls
    del objectives.DECISION_LOSSES["toy"]


def test_a_registered_decision_loss_trains_dfcl(data, toy_loss):
    """A loss registered at run time is accepted by the config, is an experiment preset, is
    refused by a method it does not list, and DFCL trains with it: the registered function gets
    the RCT-calibrated lam* and the per-row propensities resolved once, and its steps move the model."""
    from bidfcl.train.registry import presets

    assert presets()["dfcl-toy"] == {"train.method": "dfcl", "train.loss": "toy"}
    assert "bidfcl-toy" not in presets()
    with pytest.raises(ConfigError, match=r"expected train.loss in \['ppl', 'pifd'\] for method 'bidfcl'"):
        cfg_of({"method": "bidfcl", "loss": "toy"})
    cfg = cfg_of(
        {"method": "dfcl", "loss": "toy", "tau": 0.5, "epochs": 2, "warm_start_epochs": 1}, eval={"select": "last"}
    )
    tr = DfclTrainer(cfg, data)
    phases = tr.phases()
    warm = {}
    orig_begin = phases[1].begin

    def begin():
        orig_begin()
        warm["params"] = params(tr.model)

    phases[1].begin = begin
    tr.phases = lambda: phases
    res = tr.fit()
    assert toy_loss, "the registered function was never called"
    args, kw = toy_loss[0]
    r_hat, lam, prop = args[0], args[4], args[5]
    assert kw == {"tau": 0.5} and lam.dim() == 0 and bool(torch.isfinite(lam))
    assert prop.shape == (r_hat.shape[0],)  # per-row: resolved once, before the solve and the loss
    assert "toy" in res["history"][-1]
    assert any(not torch.equal(a, b) for a, b in zip(warm["params"], params(tr.model)))


def test_decision_loss_registry_rejects_bad_registrations():
    from bidfcl import objectives

    with pytest.raises(ValueError, match="already registered"):
        objectives.register_decision_loss("ppl", _toy_loss, kind="primal")
    with pytest.raises(ValueError, match="expected kind in"):
        objectives.register_decision_loss("toy2", _toy_loss, kind="other")
    with pytest.raises(ValueError, match="dual.*leave 'bidfcl' out"):
        objectives.register_decision_loss("toy2", _toy_loss, kind="dual")
    with pytest.raises(TypeError, match="callable"):
        objectives.register_decision_loss("toy2", "not a function", kind="primal")
    with pytest.raises(ValueError, match=r"unknown decision loss 'nope' \(registered: ppl, pifd, dpl, mer, difd\)"):
        objectives.decision_loss_spec("nope")
    assert "toy2" not in objectives.DECISION_LOSSES
