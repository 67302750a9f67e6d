"""``check=False``: value checks written to a device status record and raised lazily.

The contract (README "## CUDA", solver.py / losses.py module docs):

* for valid input ``check=False`` gives exactly the numbers of ``check=True`` (solutions, losses and
  gradients, bit for bit), with ``status`` reporting no error;
* for bad input it does not raise; ``bidfcl.raise_if_failed`` (or ``.check()``) then raises an
  :class:`bidfcl.InputError` with exactly the eager call's message, for every kind of bad value and
  for several bad values at once (the first in the eager order wins);
* shape, dtype and device errors still raise at once, with the eager message.

These run on the CPU (the semantics are the same on every device); the CUDA side, where
``check=False`` also means no host synchronisation, is in ``test_lazy_check_cuda.py``.
"""

from __future__ import annotations

import pytest
import torch

import bidfcl
from bidfcl import losses
from bidfcl._ops import EXTENSION_LOADED
from bidfcl._validate import STATUS_LEN, status_message
from conftest import DTYPES, F64, with_bad_entries

pytestmark = pytest.mark.usefixtures("one_thread")


def problem(n: int = 40, m: int = 4, dtype=F64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, m, generator=g, dtype=F64).to(dtype) * 3
    costs = torch.rand(n, m, generator=g, dtype=F64).to(dtype)
    costs[:, 0] = 0
    treatment = torch.randint(0, m, (n,), generator=g)
    cost_obs = (torch.rand(n, generator=g, dtype=F64) * 2).to(dtype)
    revenue = (torch.rand(n, generator=g, dtype=F64) * 5).to(dtype)
    return values, costs, treatment, cost_obs, revenue


def eager_message(fn, *args, **kwargs) -> str:
    with pytest.raises(bidfcl.InputError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def lazy_message(result) -> str:
    """The message raise_if_failed gives for a check=False result (which must not have raised)."""
    with pytest.raises(bidfcl.InputError) as info:
        bidfcl.raise_if_failed(result)
    return str(info.value)


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(x, y), (x, y)


def assert_ok(status: torch.Tensor, device="cpu"):
    assert status.dtype == torch.int64 and status.shape == (STATUS_LEN,)
    assert status.device.type == device
    assert int(status[0]) == 0 and status_message(status.tolist()) is None


# --------------------------------------------------------------------------------------------------
# valid input: identical numbers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("budget", [0.0, 3.5, 1e9, "many"])
def test_solve_mckp_identical(dtype, budget):
    values, costs, *_ = problem(dtype=dtype)
    b = torch.tensor([0.0, 1.0, 4.0, 7.25, 100.0], dtype=F64) if budget == "many" else budget
    eager = bidfcl.solve_mckp(values, costs, b)
    lazy = bidfcl.solve_mckp(values, costs, b, check=False)
    assert_same(eager, lazy)
    assert eager.status is None
    assert_ok(lazy.status)
    assert lazy.check() is lazy
    bidfcl.raise_if_failed(lazy, eager, None)


def test_solve_mckp_identical_on_ties():
    """Integer data: many equal breakpoints and budgets exactly on frontier points."""
    g = torch.Generator().manual_seed(3)
    values = torch.randint(-3, 20, (60, 5), generator=g).to(F64)
    costs = torch.randint(0, 6, (60, 5), generator=g).to(F64)
    spend = bidfcl.budget_frontier(values, costs).spend
    budgets = spend[:: max(1, spend.numel() // 7)].clone()
    assert_same(bidfcl.solve_mckp(values, costs, budgets), bidfcl.solve_mckp(values, costs, budgets, check=False))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("propensity", [None, "row", "arm"])
def test_solve_mckp_rct_identical(dtype, propensity):
    values, costs, treatment, cost_obs, _ = problem(dtype=dtype, seed=1)
    prop = {None: None, "row": torch.full((40,), 0.25, dtype=dtype), "arm": [0.1, 0.2, 0.3, 0.4]}[propensity]
    for b in (0.05, 0.4, torch.tensor([0.0, 0.2, 0.6, 5.0], dtype=F64)):
        eager = bidfcl.solve_mckp_rct(values, costs, treatment, cost_obs, b, prop)
        lazy = bidfcl.solve_mckp_rct(values, costs, treatment, cost_obs, b, prop, check=False)
        assert_same(eager, lazy)
        assert_ok(lazy.status)


LOSSES = {
    "ppl": lambda r, c, t, rev, cost, lam, **kw: losses.ppl_loss(r, c, t, rev, lam, tau=0.7, **kw),
    "pifd": lambda r, c, t, rev, cost, lam, **kw: losses.pifd_loss(r, c, t, rev, lam, **kw),
    "pifd_clip": lambda r, c, t, rev, cost, lam, **kw: losses.pifd_loss(r, c, t, rev, lam, clip=0.3, **kw),
    "mer": lambda r, c, t, rev, cost, lam, **kw: losses.mer_loss(r, c, t, rev, cost, [0.0, lam], tau=0.5, **kw),
    "dpl": lambda r, c, t, rev, cost, lam, **kw: losses.dpl_loss(r, c, t, rev, cost, [lam, 2 * lam], **kw),
    "difd": lambda r, c, t, rev, cost, lam, **kw: losses.difd_loss(r, c, t, rev, cost, [lam], **kw),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_losses_identical_with_gradients(kind, dtype):
    values, costs, treatment, cost_obs, revenue = problem(dtype=dtype, seed=2)
    grads = []
    for check in (True, False):
        r = values.clone().requires_grad_()
        c = costs.clone().requires_grad_()
        out = LOSSES[kind](r, c, treatment, revenue, cost_obs, 0.8, **({} if check else {"check": False}))
        if not check:
            assert isinstance(out, losses.LossWithStatus)
            assert_ok(out.status)
            assert out.check() is out.loss
            out = out.loss
        (out * 1.5).backward()  # a non-unit upstream gradient, as inside a larger loss
        grads.append((out.detach(), r.grad, c.grad))
    assert_same(grads[0], grads[1])


def test_lazy_loss_without_grad_and_lam_tensor():
    values, costs, treatment, _, revenue = problem(seed=4)
    lam = torch.tensor(0.3, dtype=F64)
    eager = losses.ppl_loss(values, costs, treatment, revenue, lam)
    lazy = losses.ppl_loss(values, costs, treatment, revenue, lam, check=False)
    assert torch.equal(eager, lazy.loss) and lazy.loss.grad_fn is None


def test_training_step_matches_eager():
    """The step a CUDA graph would capture (model, RCT solve, PPL loss, backward, optimizer step),
    run with check=False, ends in exactly the parameters of the eager step."""
    _, _, treatment, _, revenue = problem(n=64, m=3, seed=5)
    cost_obs = 0.5 * treatment.to(F64)  # arm 0 is free, so the cheapest policy fits every budget
    free_arm = torch.tensor([0.0, 1.0, 1.0], dtype=F64)
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(6), dtype=F64)
    budgets = torch.tensor([0.3], dtype=F64)
    params = []
    for check in (True, False):
        torch.manual_seed(7)
        model = torch.nn.Linear(6, 6, dtype=F64)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        statuses = []
        for _ in range(3):
            out = model(x)
            r_hat, c_hat = out[:, :3], torch.nn.functional.softplus(out[:, 3:]) * free_arm
            sol = bidfcl.solve_mckp_rct(r_hat.detach(), c_hat.detach(), treatment, cost_obs, budgets, check=check)
            loss = losses.ppl_loss(r_hat, c_hat, treatment, revenue, sol.lam, check=check)
            if not check:
                statuses += [sol, loss]
                loss = loss.loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        bidfcl.raise_if_failed(*statuses)
        assert bool(torch.isfinite(sol.lam).all()) and float(sol.lam.max()) > 0  # a real cut, not "all fits"
        params.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*params):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# bad input: the lazy message is the eager one
# --------------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


def _set(t: torch.Tensor, index, value) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


SOLVE_CASES = {
    "value_nan": dict(values=((5, 2), NAN)),
    "value_inf": dict(values=((0, 0), -INF)),
    "cost_nan": dict(costs=((7, 1), NAN)),
    "cost_inf": dict(costs=((39, 3), INF)),
    "cost_negative": dict(costs=((3, 3), -0.5)),
    "budget_nan": dict(budget=NAN),
    "budget_inf": dict(budget=INF),
    "budget_negative": dict(budget=-2.0),
    "budgets_second_bad": dict(budget=torch.tensor([1.0, -1.0, NAN], dtype=F64)),
    # several at once: the eager order decides (budgets before cells in the compiled op)
    "budget_and_value": dict(budget=-1.0, values=((2, 1), NAN)),
    "value_after_cost": dict(values=((9, 0), NAN), costs=((4, 2), -1.0)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(SOLVE_CASES))
def test_solve_mckp_bad_input_lazily(case, dtype):
    values, costs, *_ = problem(dtype=dtype)
    spec = SOLVE_CASES[case]
    values, costs = with_bad_entries(spec, values=values, costs=costs).values()
    budget = spec.get("budget", 2.0)
    expected = eager_message(bidfcl.solve_mckp, values, costs, budget)
    sol = bidfcl.solve_mckp(values, costs, budget, check=False)  # does not raise
    assert int(sol.status[0]) != 0
    assert lazy_message(sol) == expected
    with pytest.raises(bidfcl.InputError, match="^bidfcl: "):
        sol.check()
    assert lazy_message(sol.status) == expected  # the bare status tensor works too


RCT_CASES = {
    "treatment_high": dict(treatment=((6,), 4)),
    "treatment_negative": dict(treatment=((0,), -3)),
    "propensity_zero": dict(propensity=((11,), 0.0)),
    "propensity_above_one": dict(propensity=((2,), 1.5)),
    "propensity_nan": dict(propensity=((30,), NAN)),
    "cost_obs_nan": dict(cost_obs=((8,), NAN)),
    "cost_obs_inf": dict(cost_obs=((1,), -INF)),
    "value_nan": dict(values=((12, 0), NAN)),
    "cost_negative": dict(costs=((5, 1), -2.0)),
    "budget_negative": dict(budget=-0.1),
    "budget_nan": dict(budget=torch.tensor([0.2, NAN], dtype=F64)),
    # several at once: the wrapper's treatment check first, then budgets, cells, RCT rows
    "treatment_and_value": dict(treatment=((20,), 9), values=((1, 1), NAN)),
    "value_and_propensity": dict(values=((25, 3), INF), propensity=((3,), 0.0)),
    "propensity_and_cost_obs": dict(propensity=((9,), 2.0), cost_obs=((4,), NAN)),
    "budget_and_cost": dict(budget=NAN, costs=((0, 1), -1.0)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(RCT_CASES))
def test_solve_mckp_rct_bad_input_lazily(case, dtype):
    values, costs, treatment, cost_obs, _ = problem(dtype=dtype, seed=8)
    propensity = torch.full((40,), 0.25, dtype=dtype)
    spec = RCT_CASES[case]
    bad = with_bad_entries(
        spec, values=values, costs=costs, treatment=treatment, cost_obs=cost_obs, propensity=propensity
    )
    values, costs, treatment, cost_obs, propensity = bad.values()
    budget = spec.get("budget", 0.3)
    args = (values, costs, treatment, cost_obs, budget, propensity)
    expected = eager_message(bidfcl.solve_mckp_rct, *args)
    sol = bidfcl.solve_mckp_rct(*args, check=False)
    assert lazy_message(sol) == expected


def test_rct_bad_label_with_arm_shares_lazily():
    """propensity=None: the arm shares are computed from labels that may be out of range."""
    values, costs, treatment, cost_obs, _ = problem(seed=9)
    treatment = _set(treatment, (17,), 100)
    expected = eager_message(bidfcl.solve_mckp_rct, values, costs, treatment, cost_obs, 0.3)
    assert lazy_message(bidfcl.solve_mckp_rct(values, costs, treatment, cost_obs, 0.3, check=False)) == expected


DECISION_CASES = {
    "r_hat_nan": dict(r=((3, 1), NAN)),
    "c_hat_inf": dict(c=((7, 0), INF)),
    "treatment_high": dict(t=((5,), 4)),
    "treatment_negative": dict(t=((38,), -1)),
    "revenue_nan": dict(rev=((10,), NAN)),
    "cost_inf": dict(cost=((2,), INF)),
    "lam_nan": dict(lam=NAN),
    "lam_inf_tensor": dict(lam=torch.tensor([INF], dtype=F64)),
    "propensity_zero": dict(prop=((4,), 0.0)),
    "propensity_big": dict(prop=((0,), 3.0)),
    # several at once: labels, then lam, then the first bad row (compiled op) / kind (twins)
    "lam_and_r_hat": dict(lam=NAN, r=((0, 0), NAN)),
    "r_hat_late_c_hat_early": dict(r=((30, 2), NAN), c=((3, 1), -INF)),
    "treatment_and_lam": dict(t=((12,), 7), lam=INF),
    "revenue_and_propensity": dict(rev=((20,), INF), prop=((6,), -0.5)),
}


@pytest.mark.parametrize("kind", ["ppl", "pifd", "mer", "difd"])
@pytest.mark.parametrize("case", sorted(DECISION_CASES))
def test_losses_bad_input_lazily(kind, case):
    values, costs, treatment, cost_obs, revenue = problem(seed=10)
    prop = torch.full((40,), 0.25, dtype=F64)
    spec = DECISION_CASES[case]
    if "cost" in spec and kind not in ("mer", "difd"):
        pytest.skip("only the dual losses take a cost")
    r, c, t, rev, cost, p = with_bad_entries(
        spec, r=values, c=costs, t=treatment, rev=revenue, cost=cost_obs, prop=prop
    ).values()
    lam = spec.get("lam", 0.5)
    # the dual losses take a grid; entries of a Python list are numbers, checked at once like tau,
    # so the grid is a tensor here
    lams = lam.reshape(1) if isinstance(lam, torch.Tensor) else torch.tensor([lam], dtype=F64)
    fn = {
        "ppl": lambda **kw: losses.ppl_loss(r, c, t, rev, lam, p, **kw),
        "pifd": lambda **kw: losses.pifd_loss(r, c, t, rev, lam, p, clip=0.2, **kw),
        "mer": lambda **kw: losses.mer_loss(r, c, t, rev, cost, lams, p, **kw),
        "difd": lambda **kw: losses.difd_loss(r, c, t, rev, cost, lams, p, **kw),
    }[kind]
    expected = eager_message(fn)
    out = fn(check=False)
    assert isinstance(out, losses.LossWithStatus)
    assert lazy_message(out) == expected


def test_lazy_loss_with_bad_input_still_backpropagates():
    """check=False on bad input: no error in forward or backward (the numbers are unspecified)."""
    values, costs, treatment, _, revenue = problem(seed=11)
    r = _set(values, (2, 2), NAN).requires_grad_()
    c = costs.clone().requires_grad_()
    bad_t = _set(treatment, (0,), 99)
    for fn in (losses.ppl_loss, losses.pifd_loss):
        out = fn(r, c, bad_t, revenue, 0.5, check=False)
        out.loss.backward()
        assert r.grad is not None and r.grad.shape == r.shape
        assert lazy_message(out).startswith("bidfcl: treatment must be in [0, M)")


# --------------------------------------------------------------------------------------------------
# what raises at once, and the helper itself
# --------------------------------------------------------------------------------------------------


def test_metadata_errors_still_raise_at_once():
    values, costs, treatment, cost_obs, revenue = problem()
    cases = [
        (bidfcl.solve_mckp, (values, costs[:, :3], 1.0), {}),
        (bidfcl.solve_mckp, (values, costs.float(), 1.0), {}),
        (bidfcl.solve_mckp, (values, costs, torch.tensor([[1.0]], dtype=F64)), {}),
        (bidfcl.solve_mckp_rct, (values, costs, treatment[:5], cost_obs, 0.3), {}),
        (bidfcl.solve_mckp_rct, (values, costs, treatment.float(), cost_obs, 0.3), {}),
        (losses.ppl_loss, (values, costs, treatment, revenue[:3], 0.5), {}),
        (losses.ppl_loss, (values, costs, treatment, revenue, torch.tensor([0.1, 0.2], dtype=F64)), {}),
        (losses.pifd_loss, (values[:, :1], costs[:, :1], treatment, revenue, 0.5), {}),
    ]
    for fn, args, kw in cases:
        with pytest.raises((ValueError, TypeError)) as eager:
            fn(*args, **kw)
        with pytest.raises(type(eager.value)) as lazy:
            fn(*args, check=False, **kw)
        assert str(lazy.value) == str(eager.value)


def test_check_must_be_a_bool_and_exact_only():
    values, costs, treatment, cost_obs, revenue = problem()
    with pytest.raises(bidfcl.InputTypeError, match="check must be True or False, got int 0"):
        bidfcl.solve_mckp(values, costs, 1.0, check=0)
    with pytest.raises(bidfcl.InputTypeError, match="check must be True or False"):
        losses.ppl_loss(values, costs, treatment, revenue, 0.5, check="no")
    with pytest.raises(ValueError, match="check=False needs method='exact'.*got method='bisection'"):
        bidfcl.solve_mckp(values, costs, 1.0, method="bisection", check=False)


def test_raise_if_failed_order_types_and_feasibility():
    values, costs, treatment, cost_obs, revenue = problem()
    good = bidfcl.solve_mckp(values, costs, 2.0, check=False)
    bad_budget = bidfcl.solve_mckp(values, costs, -1.0, check=False)
    bad_loss = losses.ppl_loss(values, costs, _set(treatment, (3,), 8), revenue, 0.5, check=False)
    bidfcl.raise_if_failed()
    bidfcl.raise_if_failed(good, None, [good])
    # the first failure in the order given wins
    assert lazy_message([good, bad_loss, bad_budget]) == "bidfcl: treatment must be in [0, M) = [0, 4), got 8 at row 3"
    with pytest.raises(bidfcl.InputError, match=r"^bidfcl: budgets must be >= 0 \(total budgets\), got -1 at index 0$"):
        bidfcl.raise_if_failed(bad_budget, bad_loss)
    with pytest.raises(bidfcl.InputTypeError, match="raise_if_failed takes results of check=False calls"):
        bidfcl.raise_if_failed(3.0)
    with pytest.raises(bidfcl.InputError, match=r"status must be an int64 tensor of shape \[7\]"):
        bidfcl.raise_if_failed(torch.zeros(4, dtype=torch.long))
    # infeasible budgets are a result, not an error, unless asked for
    tight = bidfcl.solve_mckp(values, costs + 1.0, torch.tensor([1e6, 1.0], dtype=F64), check=False)
    assert not bool(tight.feasible[1])
    bidfcl.raise_if_failed(tight)
    with pytest.raises(bidfcl.InputError, match="budget 1 is infeasible"):
        bidfcl.raise_if_failed(tight, require_feasible=True)
    with pytest.raises(bidfcl.InputError, match="budget 1 is infeasible"):
        tight.check(require_feasible=True)


def test_status_survives_the_scalar_squeeze_and_unpacking():
    values, costs, *_ = problem()
    sol = bidfcl.solve_mckp(values, costs, 1.0, check=False)
    assert sol.lam.dim() == 0 and sol.status.shape == (STATUS_LEN,)
    lam, choice, spend, value, dual, feasible = sol  # still a 6-tuple
    assert choice.shape == (40,)


@pytest.mark.skipif(not EXTENSION_LOADED, reason="opcheck tests the compiled ops")
def test_opcheck_changed_schemas():
    ops = torch.ops.bidfcl
    values, costs, treatment, cost_obs, revenue = problem(n=12, m=3)
    budgets = torch.tensor([0.5, 2.0], dtype=F64)
    prop = torch.full((12,), 1 / 3, dtype=F64)
    lam = torch.tensor([0.4], dtype=F64)
    checks = ("test_schema", "test_faketensor", "test_aot_dispatch_static")
    for check in (True, False):
        torch.library.opcheck(ops.solve_mckp, (values, costs, budgets, check), test_utils=checks)
        torch.library.opcheck(
            ops.solve_mckp_rct, (values, costs, treatment, cost_obs, prop, budgets, check), test_utils=checks
        )
        r = values.clone().requires_grad_()
        c = costs.clone().requires_grad_()
        torch.library.opcheck(
            ops.ppl_loss,
            (r, c, treatment, revenue, None, lam, prop, 0.5, check),
            test_utils=checks + ("test_autograd_registration",),
        )
        torch.library.opcheck(
            ops.pifd_loss,
            (r, c, treatment, revenue, cost_obs, lam, prop, 0.3, check),
            test_utils=checks + ("test_autograd_registration",),
        )
        grad = torch.tensor(1.0, dtype=F64)
        torch.library.opcheck(
            ops.ppl_loss_backward,
            (grad, values, costs, treatment, revenue, None, lam, prop, 0.5, check),
            test_utils=checks,
        )
        torch.library.opcheck(
            ops.pifd_loss_with_grad,
            (values, costs, treatment, revenue, None, lam, prop, None, check),
            test_utils=checks,
        )
    torch.library.opcheck(ops.validate_mckp, (values, costs, budgets, None, None, None), test_utils=checks)
    torch.library.opcheck(ops.validate_mckp, (values, costs, budgets, treatment, cost_obs, prop), test_utils=checks)
    torch.library.opcheck(
        ops.validate_decision, (values, costs, treatment, revenue, None, lam, prop), test_utils=checks
    )


def test_status_message_table():
    """Every code of the record decodes (the glue's and the core's), an unknown one says so. Record:
    code, row, col, value, family, input (which input of a non-finite-input error), arm."""
    import struct

    def bits(v):
        return struct.unpack("<q", struct.pack("<d", v))[0]

    assert status_message([0, -1, -1, 0, 0, -1, -1]) is None
    assert status_message([4, 3, 5, 7, 1, -1, -1]) == "bidfcl: treatment must be in [0, M) = [0, 5), got 7 at row 3"
    assert (
        status_message([20, 1, -1, bits(float("inf")), 1, -1, -1])
        == "bidfcl: budgets must be finite, got inf at index 1"
    )
    assert (
        status_message([21, 0, -1, bits(-2.5), 1, -1, -1])
        == "bidfcl: budgets must be >= 0 (per-capita budgets), got -2.5 at index 0"
    )
    assert status_message([3, 2, 1, bits(-1.0), 0, -1, -1]) == "bidfcl: costs must be >= 0, got -1 at [2, 1]"
    assert status_message([1, 2, 1, bits(1.0), 2, -1, -1]).startswith("bidfcl: r_hat must be finite")
    assert (
        status_message([6, 4, -1, bits(float("nan")), 1, -1, -1]) == "bidfcl: cost_obs must be finite, got nan at row 4"
    )
    assert status_message([6, 0, -1, bits(float("inf")), 2, 2, -1]) == "bidfcl: lam must be finite, got inf at index 0"
    assert (
        status_message([6, 9, -1, bits(float("inf")), 2, 0, -1]) == "bidfcl: revenue must be finite, got inf at row 9"
    )
    assert status_message([99, 0, 0, 0, 0, -1, -1]) == "bidfcl: unknown error code 99 in a status record"


@pytest.mark.skipif(
    not EXTENSION_LOADED, reason="the twins read their data on the host (they are the oracle, not the fast path)"
)
def test_lazy_step_compiles_fullgraph():
    """check=False leaves nothing data-dependent on the host: the solve and the loss trace into one
    graph (fake kernels of the validation ops included) and give the eager numbers."""
    values, costs, treatment, _, revenue = problem(n=30, m=3, seed=12)
    cost_obs = 0.5 * treatment.to(F64)
    budgets = torch.tensor([0.3], dtype=F64)

    def step(r, c):
        sol = bidfcl.solve_mckp_rct(r.detach(), c.detach(), treatment, cost_obs, budgets, check=False)
        loss, status = losses.ppl_loss(r, c, treatment, revenue, sol.lam, check=False)
        return loss, sol.status, status

    results = []
    for fn in (step, torch.compile(step, fullgraph=True, backend="aot_eager")):
        r, c = values.clone().requires_grad_(), costs.clone().requires_grad_()
        loss, *statuses = fn(r, c)
        loss.backward()
        bidfcl.raise_if_failed(*statuses)
        results.append((loss.detach(), r.grad, c.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
