"""Bad input to the library API (ops, solver, losses, metrics, implicit) gives a clear error.

Each case asserts the exception type and the distinctive part of the message (argument, expected
form, first bad row and value). The non-differentiable ops are checked on the compiled ops and on
their pure-PyTorch twins: outputs never require grad, and no autograd warning is raised.
"""

import warnings

import pytest
import torch

import bidfcl
from bidfcl import _reference as ref
from bidfcl import implicit, losses, metrics
from bidfcl._ops import ops
from conftest import F64, needs_ext, random_mckp


def _problem(n=12, m=3, seed=0, grad=True):
    v, c = random_mckp(n, m, seed)
    t = torch.arange(n) % m
    return v.requires_grad_(grad), c.requires_grad_(grad), t


def _rct(n=12, m=3, seed=0):
    v, c, t = _problem(n, m, seed, grad=False)
    g = torch.Generator().manual_seed(seed + 1)
    revenue = torch.rand(n, generator=g, dtype=F64)
    cost = torch.rand(n, generator=g, dtype=F64)
    return v, c, t, revenue, cost


# ---------------------------------------------------------------------------- no derivative


def _no_grad_outputs(out):
    for x in out:
        assert not x.requires_grad, "a non-differentiable op returned an output that requires grad"
        assert x.grad_fn is None


def _op_calls(backend):
    """(name, thunk) for every non-differentiable op, on inputs that require grad."""
    v, c, t = _problem()
    budgets = torch.tensor([0.5, 2.0], dtype=F64)
    prop = torch.full((12,), 1 / 3, dtype=F64)
    rev = torch.rand(12, dtype=F64, requires_grad=True)
    cost = torch.rand(12, dtype=F64, requires_grad=True)
    choice = torch.stack([t, (t + 1) % 3])
    two_r, two_c = v[:, :2], c[:, :2]
    t2 = t % 2
    return [
        ("solve_mckp", lambda: backend.solve_mckp(v, c, budgets)),
        ("solve_mckp_bisection", lambda: backend.solve_mckp_bisection(v, c, budgets, 30, 1e-6)),
        ("budget_frontier", lambda: backend.budget_frontier(v, c)),
        ("solve_mckp_rct", lambda: backend.solve_mckp_rct(v, c, t, cost, prop, budgets)),
        ("policy_value", lambda: backend.policy_value(choice, t, rev, cost, prop, False)),
        ("aucc", lambda: backend.aucc(two_r, two_c, t2, rev, cost, 20)),
        # the fused forwards: their gradient outputs are values, not differentiable functions
        ("ppl_loss_with_grad", lambda: backend.ppl_loss_with_grad(v, c, t, rev, None, budgets[:1], prop, 1.0)),
        ("pifd_loss_with_grad", lambda: backend.pifd_loss_with_grad(v, c, t, rev, None, budgets[:1], prop, None)),
        # the lazy checks (check=False): a status record, never differentiable
        ("validate_mckp", lambda: (backend.validate_mckp(v, c, budgets, t, cost, prop),)),
        ("validate_decision", lambda: (backend.validate_decision(v, c, t, rev, None, budgets[:1], prop),)),
    ]


def test_every_non_differentiable_op_is_listed():
    assert sorted(ref.NON_DIFFERENTIABLE_OPS) == sorted(name for name, _ in _op_calls(ref))


@pytest.mark.parametrize("backend", ["twin", pytest.param("op", marks=needs_ext)])
@pytest.mark.parametrize("index", range(10))
def test_non_differentiable_ops_return_outputs_without_grad(backend, index):
    name, call = _op_calls(ref if backend == "twin" else ops)[index]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "autograd kernel was not registered" warning
        out = call()
    _no_grad_outputs(out)


def test_public_solver_and_metrics_outputs_without_grad():
    v, c, t = _problem()
    rev = torch.rand(12, dtype=F64, requires_grad=True)
    cost = torch.rand(12, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _no_grad_outputs(bidfcl.solve_mckp(v, c, 1.0))
        _no_grad_outputs(bidfcl.solve_mckp(v, c, torch.tensor([1.0, 2.0], requires_grad=True), method="bisection"))
        _no_grad_outputs(bidfcl.budget_frontier(v, c))
        _no_grad_outputs(bidfcl.solve_mckp_rct(v, c, t, cost, 0.3))
        _no_grad_outputs(metrics.policy_value(t, t, rev, cost))
        _no_grad_outputs(metrics.eom(v, c, t, rev, cost, 0.3))
        _no_grad_outputs([metrics.aucc(v[:, :2], c[:, :2], t % 2, rev, cost)])
    # backward through a solver output now says there is nothing to differentiate (it used to run
    # with a warning and leave v.grad None)
    with pytest.raises(RuntimeError, match="does not require grad"):
        bidfcl.solve_mckp(v, c, 1.0).value.backward()


@needs_ext
def test_opcheck_passes_with_inputs_that_require_grad():
    v, c, t = _problem()
    budgets = torch.tensor([0.5, 2.0], dtype=F64)
    prop = torch.full((12,), 1 / 3, dtype=F64)
    cost = torch.rand(12, dtype=F64)
    torch.library.opcheck(torch.ops.bidfcl.solve_mckp.default, (v, c, budgets))
    torch.library.opcheck(torch.ops.bidfcl.solve_mckp_rct.default, (v, c, t, cost, prop, budgets))
    torch.library.opcheck(
        torch.ops.bidfcl.policy_value.default, (torch.stack([t]), t, cost.clone().requires_grad_(), cost, prop, True)
    )


# ------------------------------------------------------------------------------ option limit


def test_max_options_comes_from_the_compiled_core():
    assert bidfcl.MAX_OPTIONS == ref.MAX_OPTIONS == 256
    if bidfcl.EXTENSION_LOADED:
        assert bidfcl.build_info()["max_options"] == bidfcl.MAX_OPTIONS
    m = bidfcl.MAX_OPTIONS
    v = torch.rand(2, m + 1, dtype=F64)
    with pytest.raises(ValueError, match=f"at most {m} options"):
        bidfcl.solve_mckp(v, v, 1.0)
    bidfcl.solve_mckp(v[:, :m], v[:, :m], 1.0)  # the limit itself is accepted


# --------------------------------------------------------------------------------- treatment


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (lambda t: t.double(), TypeError, r"treatment must be int64 \(integer arm labels\), got dtype torch.float64"),
        (lambda t: t.unsqueeze(1), ValueError, r"treatment must be 1-D \[N\].*got shape \[12, 1\]"),
        (lambda t: t[:7], ValueError, r"treatment must have shape \[12\].*got \[7\]"),
        (
            lambda t: t.index_fill(0, torch.tensor([5]), 9),
            ValueError,
            r"treatment must be in \[0, M\) = \[0, 3\), got 9 at row 5",
        ),
        (lambda t: t.numpy(), TypeError, r"treatment must be a torch.Tensor"),
    ],
)
def test_bad_treatment_is_named_everywhere_it_enters(bad, exc, match):
    v, c, t, rev, cost = _rct()
    tb = bad(t)
    calls = [
        lambda: bidfcl.solve_mckp_rct(v, c, tb, cost, 0.3),
        lambda: losses.ppl_loss(v, c, tb, rev, 0.5),
        lambda: losses.pifd_loss(v, c, tb, rev, 0.5),
        lambda: losses.mer_loss(v, c, tb, rev, cost, [0.1, 0.5]),
        lambda: losses.difd_loss(v, c, tb, rev, cost, [0.1, 0.5]),
        lambda: metrics.eom(v, c, tb, rev, cost, 0.3),
        lambda: metrics.eom_curve(v, c, tb, rev, cost, torch.tensor([0.1, 0.3], dtype=F64)),
        lambda: metrics.policy_value(t, tb, rev, cost, n_options=3),
    ]
    for call in calls:
        with pytest.raises(exc, match=match):
            call()


def test_float_treatment_in_policy_value_and_aucc():
    v, c, t, rev, cost = _rct()
    with pytest.raises(TypeError, match="treatment must be int64"):
        metrics.policy_value(t, t.float(), rev, cost)  # used to fail inside torch.bincount
    with pytest.raises(TypeError, match="treatment must be int64"):
        metrics.aucc(v[:, :2], c[:, :2], (t % 2).float(), rev, cost)
    with pytest.raises(TypeError, match="treatment must be int64"):
        metrics.qini(rev, (t % 2).float(), cost)
    with pytest.raises(ValueError, match=r"treatment must be in \[0, M\) = \[0, 2\), got 2 at row 2"):
        metrics.auuc(rev, t, cost)


# ------------------------------------------------------------------------------------ metrics


def test_policy_value_rejects_choices_outside_the_arms():
    _, _, t, rev, cost = _rct()
    for value in (7, -1):
        choice = t.clone()
        choice[4] = value
        with pytest.raises(ValueError, match=rf"choice must be in \[0, M\) = \[0, 3\) .*got {value} at row 4"):
            metrics.policy_value(choice, t, rev, cost)  # used to score the row as 0
    many = torch.stack([t, t])
    many[1, 6] = 3
    with pytest.raises(ValueError, match=r"got 3 at \[1, 6\] \(policy 1, row 6\)"):
        metrics.policy_value(many, t, rev, cost)
    # the arms can be given: a choice of an arm the sample lacks is then accepted
    metrics.policy_value(torch.full_like(t, 3), t, rev, cost, n_options=4)
    with pytest.raises(ValueError, match=r"n_options must be >= 1 and <= 256"):
        metrics.policy_value(t, t, rev, cost, n_options=1000)
    with pytest.raises(TypeError, match="choice must be int64"):
        metrics.policy_value(t.float(), t, rev, cost)


def test_qini_and_auuc_reject_nan():
    _, _, t, rev, cost = _rct()
    t2 = t % 2
    score = rev.clone()
    score[2] = float("nan")
    for fn in (metrics.qini, metrics.auuc):
        with pytest.raises(ValueError, match=r"score must be finite, got nan at row 2"):
            fn(score, t2, cost)
        outcome = cost.clone()
        outcome[5] = float("inf")
        with pytest.raises(ValueError, match=r"outcome must be finite, got inf at row 5"):
            fn(rev, t2, outcome)
        with pytest.raises(ValueError, match=r"outcome must have shape \[12\]"):
            fn(rev, t2, cost[:3])


def test_curve_resolution_is_bounded():
    v, c, t, rev, cost = _rct()
    t2 = t % 2
    for call in (
        lambda q: metrics.aucc(v[:, :2], c[:, :2], t2, rev, cost, q=q),
        lambda q: metrics.aucc_curve(v[:, :2], c[:, :2], t2, rev, cost, q=q),
        lambda q: metrics.qini(rev, t2, cost, q=q),
        lambda q: metrics.auuc(rev, t2, cost, q=q),
    ):
        with pytest.raises(ValueError, match=r"q must be >= 1 and <= 1000000 .*got 1000000000"):
            call(10**9)  # used to allocate 16 GB
        with pytest.raises(TypeError, match="q must be an integer, got float 2.5"):
            call(2.5)
        call(metrics.MAX_CURVE_Q)  # the bound itself runs (a few MB)


def test_aucc_needs_two_options_and_metrics_name_nan_outcomes():
    v, c, t, rev, cost = _rct()
    with pytest.raises(ValueError, match=r"aucc needs exactly two options.*got shape \[12, 3\]"):
        metrics.aucc(v, c, t, rev, cost)
    bad = rev.clone()
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="revenue must be finite, got nan at row 3"):
        metrics.policy_value(t, t, bad, cost)


# ------------------------------------------------------------------------------------- solver


def test_solver_value_errors_are_value_errors():
    v, c, _ = _problem(grad=False)
    bad = v.clone()
    bad[4, 2] = float("nan")
    with pytest.raises(ValueError, match=r"values must be finite, got nan at \[4, 2\]"):
        bidfcl.solve_mckp(bad, c, 1.0)
    with pytest.raises(ValueError, match=r"budgets must be >= 0"):
        bidfcl.solve_mckp(v, c, -1.0)
    with pytest.raises(bidfcl.InputError):  # also a RuntimeError, as the ops' own checks were
        bidfcl.solve_mckp(v, -c, 1.0)


def test_solver_arguments_of_the_wrong_type():
    v, c, t = _problem(grad=False)
    with pytest.raises(TypeError, match="max_iter must be an integer, got str"):
        bidfcl.solve_mckp(v, c, 1.0, method="bisection", max_iter="30")
    with pytest.raises(ValueError, match="tol must be finite and >= 0"):
        bidfcl.solve_mckp(v, c, 1.0, method="bisection", tol=-1.0)
    with pytest.raises(TypeError, match="budget must be a number or a 1-D real tensor, got dtype torch.bool"):
        bidfcl.solve_mckp(v, c, torch.tensor([True]))
    with pytest.raises(TypeError, match="cost_obs must be a float tensor"):
        bidfcl.solve_mckp_rct(v, c, t, t, 0.3)
    with pytest.raises(TypeError, match="propensity must be a float tensor"):
        bidfcl.solve_mckp_rct(v, c, t, c[:, 0], 0.3, propensity=t)


# ------------------------------------------------------------------------------------- losses


def test_loss_options_are_checked():
    v, c, t, rev, cost = _rct()
    with pytest.raises(TypeError, match="tau must be a number, got str"):
        losses.ppl_loss(v, c, t, rev, 0.5, tau="1")
    with pytest.raises(ValueError, match="tau must be finite and > 0, got inf"):
        losses.mer_loss(v, c, t, rev, cost, [0.1], tau=float("inf"))
    with pytest.raises(TypeError, match="clip must be None or a number"):
        losses.pifd_loss(v, c, t, rev, 0.5, clip="0.3")
    with pytest.raises(TypeError, match=r"lams\[1\] must be a number, got str"):
        losses.dpl_loss(v, c, t, rev, cost, [0.1, "x"])
    with pytest.raises(ValueError, match=r"r_hat must have at least two options \(M >= 2\)"):
        losses.ppl_loss(v[:, :1], c[:, :1], t * 0, rev, 0.5)
    with pytest.raises(TypeError, match="revenue must be a real tensor"):
        losses.ppl_loss(v, c, t, rev.to(torch.complex128), 0.5)


# ----------------------------------------------------------------------------------- implicit


def _quadratic(scale: float):
    """lower(theta, phi) = scale/2 ||theta - phi||^2 (H = scale I), upper = ||theta||^2 / 2."""
    theta = torch.ones(4, dtype=F64, requires_grad=True)
    phi = torch.full((4,), 0.5, dtype=F64, requires_grad=True)

    def lower(inner, outer):
        return 0.5 * scale * ((inner[0] - outer[0]) ** 2).sum()

    def upper(inner, outer):
        return 0.5 * (inner[0] ** 2).sum()

    return lower, upper, [theta], [phi]


def test_neumann_reports_divergence():
    lower, upper, inner, outer = _quadratic(scale=3.0)  # alpha = 1 > 2 / lambda_max = 2/3
    res = implicit.neumann(lower, upper, inner, outer, max_iter=200, alpha=1.0)
    assert res.state.status == "diverged" and res.state.diverged
    assert res.state.iter_num < 10  # stopped when the terms grew, not after 200 products
    assert res.state.error > implicit.NEUMANN_DIVERGENCE_FACTOR
    assert all(torch.isfinite(g).all() for g in res.grads)
    # a small enough alpha converges to the implicit hypergradient (theta* = phi, so dL/dphi = theta)
    ok = implicit.neumann(lower, upper, inner, outer, max_iter=60, alpha=0.5)
    assert ok.state.status == "max_iter" and ok.state.error < 1e-12
    exact = implicit.hypergradient(lower, upper, inner, outer, backend="python")
    torch.testing.assert_close(ok.grads[0], exact.grads[0])


def test_neumann_reports_divergence_on_negative_curvature():
    lower, upper, inner, outer = _quadratic(scale=-1.0)  # H = -I: every term grows by (1 + alpha)
    res = implicit.neumann(lower, upper, inner, outer, max_iter=100, alpha=0.5)
    assert res.state.status == "diverged"


def test_solve_hessian_explains_what_it_takes():
    lower, _, inner, outer = _quadratic(scale=2.0)
    with pytest.raises(
        TypeError,
        match=r"solve_hessian takes the loss value, a scalar tensor computed from "
        r"params .* got the function lower itself",
    ):
        implicit.solve_hessian(lower, inner, [torch.ones(4, dtype=F64)])
    with pytest.raises(TypeError, match="solve_hessian takes the loss as a scalar tensor"):
        implicit.solve_hessian(1.0, inner, [torch.ones(4, dtype=F64)])
    v, state = implicit.solve_hessian(lower(inner, outer), inner, [torch.ones(4, dtype=F64)])
    assert state.converged
    torch.testing.assert_close(v[0], torch.full((4,), 0.5, dtype=F64))


# ------------------------------------------------------------------------------------- models


def test_model_inputs_are_checked():
    from bidfcl.models import MultiHeadMLP

    model = MultiHeadMLP(3, 2, hidden=(4,))
    x = torch.rand(5, 3)
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got ndarray"):
        model(x.numpy())
    with pytest.raises(ValueError, match=r"expected x of shape \[N, 3\], got \[5, 2\]"):
        model.predict(x[:, :2])
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        model.predict(x, batch_size=0)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"x must be finite, got nan at \[2, 1\]"):
        model.fit_scaler(bad)  # used to set a NaN mean: every later prediction NaN
    model.fit_scaler(x)
    assert torch.isfinite(model.predict(x)[0]).all()
