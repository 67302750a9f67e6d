"""Decision losses (METHOD.md section 3): PPL/DPL/MER softmax losses and PIFD/DIFD flip losses.

The compiled ops are checked against the pure-PyTorch twins (float64), the PIFD gradient against a
brute-force flip of the exact discrete policy value, plus opcheck, gradcheck, torch.compile, bad
inputs, empty/non-contiguous inputs and thread-count determinism.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bidfcl import _reference as ref
from bidfcl import losses
from bidfcl._ops import ops
from conftest import DTYPES, F64, decision_batch, needs_cuda, needs_ext


def lam_of(values, dtype=F64):
    return torch.tensor(values, dtype=dtype)


def weights(rev, cost, lam, prop):
    """w[l, i] = reward / (N p_i) in float64."""
    n = rev.shape[0]
    lam = lam.to(F64).view(-1, 1)
    reward = rev.to(F64).unsqueeze(0) if cost is None else rev.to(F64) - lam * cost.to(F64)
    return reward.expand(lam.shape[0], n) / (n * prop.to(F64))


# --------------------------------------------------------------------------------------------------
# PPL / DPL / MER
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 5])
@pytest.mark.parametrize("tau", [1.0, 0.3])
@pytest.mark.parametrize("with_cost", [False, True])
def test_softmax_loss_and_gradients_match_twin_autograd(m, tau, with_cost):
    r, c, t, rev, cost, prop = decision_batch(n=40, m=m, seed=m, with_cost=with_cost)
    lam = lam_of([0.7] if not with_cost else [0.2, 0.7, 1.5])
    r1, c1 = r.clone().requires_grad_(), c.clone().requires_grad_()
    loss = ops.ppl_loss(r1, c1, t, rev, cost, lam, prop, tau)
    loss.backward()
    r2, c2 = r.clone().requires_grad_(), c.clone().requires_grad_()
    loss_ref = ref.ppl_loss(r2, c2, t, rev, cost, lam, prop, tau)
    loss_ref.backward()
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(r1.grad, r2.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(c1.grad, c2.grad, rtol=1e-10, atol=1e-14)
    # the explicit backward twin agrees with autograd of the forward twin
    g = torch.tensor(1.0, dtype=F64)
    gr, gc = ref.ppl_loss_backward(g, r, c, t, rev, cost, lam, prop, tau)
    torch.testing.assert_close(gr, r2.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(gc, c2.grad, rtol=1e-10, atol=1e-14)


def test_ppl_loss_value_from_definition():
    r, c, t, rev, _, prop = decision_batch(n=9, m=4, seed=3)
    lam = 0.4
    z = torch.softmax((r - lam * c) / 2.0, dim=1)
    expected = -(z[torch.arange(9), t] * rev / prop).mean()
    got = losses.ppl_loss(r, c, t, rev, lam, tau=2.0)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_ppl_gradcheck():
    r, c, t, rev, _, prop = decision_batch(n=8, m=3, seed=5)
    r.requires_grad_()
    c.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: losses.ppl_loss(a, b, t, rev, 0.6, prop, tau=0.8), (r, c))


def test_mer_gradcheck_over_lam_grid():
    r, c, t, rev, cost, prop = decision_batch(n=8, m=3, seed=6, with_cost=True)
    r.requires_grad_()
    c.requires_grad_()
    lams = [0.1, 0.5, 2.0]
    assert torch.autograd.gradcheck(lambda a, b: losses.mer_loss(a, b, t, rev, cost, lams, prop, tau=0.5), (r, c))


def test_dual_losses_sum_over_grid():
    r, c, t, rev, cost, prop = decision_batch(n=20, m=3, seed=7, with_cost=True)
    lams = [0.0, 0.5, 1.0]
    per_lam = sum(losses.mer_loss(r, c, t, rev, cost, [x], prop, tau=2.0) for x in lams)
    torch.testing.assert_close(losses.mer_loss(r, c, t, rev, cost, lams, prop, tau=2.0), per_lam)
    torch.testing.assert_close(
        losses.dpl_loss(r, c, t, rev, cost, lams, prop), losses.mer_loss(r, c, t, rev, cost, lams, prop, tau=1.0)
    )
    per_lam = sum(losses.difd_loss(r, c, t, rev, cost, [x], prop) for x in lams)
    torch.testing.assert_close(losses.difd_loss(r, c, t, rev, cost, lams, prop), per_lam)
    # a one-multiplier dual loss with zero cost is the primal loss
    zero = torch.zeros_like(rev)
    torch.testing.assert_close(
        losses.dpl_loss(r, c, t, rev, zero, [0.5], prop), losses.ppl_loss(r, c, t, rev, 0.5, prop)
    )


def test_lam_gets_no_gradient():
    r, c, t, rev, _, prop = decision_batch(n=10, m=3, seed=8)
    lam = torch.tensor(0.5, dtype=F64, requires_grad=True)
    r.requires_grad_()
    losses.ppl_loss(r, c, t, rev, lam, prop).backward()
    losses.pifd_loss(r, c, t, rev, lam, prop).backward()
    assert lam.grad is None and r.grad is not None


# --------------------------------------------------------------------------------------------------
# PIFD / DIFD
# --------------------------------------------------------------------------------------------------


def exact_value(a: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """V of the argmax policy (ties to the lowest index) for scores a [N, M], weights w [N]."""
    return (w * (a.argmax(dim=1) == t).to(F64)).sum()


def brute_force_flip_gradient(a: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """dL/da by literally flipping each cell: move a[i, j] just past the point where row i's
    decision changes (down to the runner-up if j is chosen, up past the chosen option otherwise),
    recompute the exact V, and divide its change (negated: L = -V) by the move to the threshold."""
    n, m = a.shape
    v0 = exact_value(a, t, w)
    grad = torch.zeros_like(a)
    for i in range(n):
        k = int(a[i].argmax())
        for j in range(m):
            if j == k:
                others = a[i].clone()
                others[k] = -math.inf
                threshold = float(others.max())
                new = threshold - 1e-9 * (1 + abs(threshold))
            else:
                threshold = float(a[i, k])
                new = threshold + 1e-9 * (1 + abs(threshold))
            moved = a.clone()
            moved[i, j] = new
            dv = exact_value(moved, t, w) - v0
            grad[i, j] = -dv / (threshold - float(a[i, j]))
    return grad


@pytest.mark.parametrize("m", [2, 3, 5])
def test_pifd_gradient_is_the_exact_flip(m):
    r, c, t, rev, _, prop = decision_batch(n=15, m=m, seed=10 + m)
    lam = 0.8
    r1, c1 = r.clone().requires_grad_(), c.clone().requires_grad_()
    loss = losses.pifd_loss(r1, c1, t, rev, lam, prop)
    loss.backward()
    a = r - lam * c
    w = weights(rev, None, lam_of([lam]), prop)[0]
    torch.testing.assert_close(loss, -exact_value(a, t, w), rtol=1e-12, atol=1e-14)
    expected = brute_force_flip_gradient(a, t, w)
    torch.testing.assert_close(r1.grad, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(c1.grad, -lam * expected, rtol=1e-9, atol=1e-12)
    # which cells carry an estimate: all of a matched row; t (and k when t is runner-up) otherwise
    k = a.argmax(1)
    for i in range(15):
        nonzero = set(torch.nonzero(r1.grad[i]).flatten().tolist())
        if k[i] == t[i]:
            assert nonzero == set(range(m))
        else:
            assert int(t[i]) in nonzero and nonzero <= {int(t[i]), int(k[i])}


def test_difd_gradient_is_the_exact_flip_summed_over_grid():
    r, c, t, rev, cost, prop = decision_batch(n=12, m=4, seed=21, with_cost=True)
    lams = lam_of([0.3, 1.1])
    r1, c1 = r.clone().requires_grad_(), c.clone().requires_grad_()
    losses.difd_loss(r1, c1, t, rev, cost, lams, prop).backward()
    w = weights(rev, cost, lams, prop)
    exp_r = torch.zeros_like(r)
    exp_c = torch.zeros_like(r)
    for li, lam in enumerate(lams.tolist()):
        g = brute_force_flip_gradient(r - lam * c, t, w[li])
        exp_r += g
        exp_c -= lam * g
    torch.testing.assert_close(r1.grad, exp_r, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(c1.grad, exp_c, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("with_cost", [False, True])
@pytest.mark.parametrize("clip", [None, 0.3])
def test_pifd_matches_twin(with_cost, clip):
    r, c, t, rev, cost, prop = decision_batch(n=200, m=4, seed=30, with_cost=with_cost)
    lam = lam_of([0.5] if not with_cost else [0.2, 0.9])
    g = torch.tensor(1.7, dtype=F64)
    torch.testing.assert_close(
        ops.pifd_loss(r, c, t, rev, cost, lam, prop, clip),
        ref.pifd_loss(r, c, t, rev, cost, lam, prop, clip),
        rtol=1e-12,
        atol=1e-14,
    )
    for a, b in zip(
        ops.pifd_loss_backward(g, r, c, t, rev, cost, lam, prop, clip),
        ref.pifd_loss_backward(g, r, c, t, rev, cost, lam, prop, clip),
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_pifd_clip_and_zero_gap_rules():
    # lam = 0 and c = 0, so the scores are r itself; equal propensities 1/2 and N = 2: C = rev
    r = torch.tensor(
        [
            [1.0, 0.9, 0.5, -1.0],  # matched (t = 0); gaps 0.1, 0.5, 2.0
            [0.0, 0.2, 0.25, 0.1],
        ],
        dtype=F64,
    )  # unmatched (t = 1); k = 2, s = 1 = t, gap 0.05
    c = torch.zeros_like(r)
    t = torch.tensor([0, 1])
    rev = torch.tensor([1.0, 1.0], dtype=F64)
    prop = torch.tensor([0.5, 0.5], dtype=F64)
    cw = 1.0  # rev / (N p) = 1 / (2 * 0.5)

    def grad(clip):
        x = r.clone().requires_grad_()
        losses.pifd_loss(x, c, t, rev, 0.0, prop, clip=clip).backward()
        return x.grad

    no_clip = torch.tensor([[-cw / 0.1, cw / 0.1, cw / 0.5, cw / 2.0], [0.0, -cw / 0.05, cw / 0.05, 0.0]], dtype=F64)
    torch.testing.assert_close(grad(None), no_clip, rtol=1e-12, atol=0)
    # clip h = 0.3: gaps below h count as h, gaps above h are zeroed
    clipped = torch.tensor([[-cw / 0.3, cw / 0.3, 0.0, 0.0], [0.0, -cw / 0.3, cw / 0.3, 0.0]], dtype=F64)
    torch.testing.assert_close(grad(0.3), clipped, rtol=1e-12, atol=0)
    # a gap of exactly h is kept (as h)
    torch.testing.assert_close(grad(0.5)[0, 2], torch.tensor(cw / 0.5, dtype=F64))
    # a tie at the top without a clip uses the documented floor
    tie = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64, requires_grad=True)
    losses.pifd_loss(
        tie,
        torch.zeros_like(tie),
        torch.tensor([0]),
        torch.tensor([2.0], dtype=F64),
        0.0,
        torch.tensor([1.0], dtype=F64),
    ).backward()
    floor = losses.PIFD_ZERO_GAP_FLOOR
    torch.testing.assert_close(tie.grad, torch.tensor([[-2.0 / floor, 2.0 / floor, 2.0]], dtype=F64))


def test_pifd_forward_is_minus_policy_value():
    from bidfcl.metrics import policy_value

    r, c, t, rev, _, prop = decision_batch(n=300, m=3, seed=40)
    lam = 0.6
    choice = (r - lam * c).argmax(1)
    pv = policy_value(choice, t, rev, torch.zeros_like(rev), prop)
    torch.testing.assert_close(losses.pifd_loss(r, c, t, rev, lam, prop), -pv.value, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------------
# propensity handling
# --------------------------------------------------------------------------------------------------


def test_propensity_forms_agree():
    r, c, t, rev, _, _ = decision_batch(n=30, m=3, seed=41)
    per_arm = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    a = losses.ppl_loss(r, c, t, rev, 0.5, per_arm)
    b = losses.ppl_loss(r, c, t, rev, 0.5, per_arm[t])
    torch.testing.assert_close(a, b)
    shares = torch.bincount(t, minlength=3).to(F64) / 30
    torch.testing.assert_close(losses.ppl_loss(r, c, t, rev, 0.5), losses.ppl_loss(r, c, t, rev, 0.5, shares))


# --------------------------------------------------------------------------------------------------
# training check: PPL improves the true policy value
# --------------------------------------------------------------------------------------------------


def test_linear_model_trained_with_ppl_improves_true_policy_value():
    g = torch.Generator().manual_seed(123)
    n, d, m = 4000, 5, 3
    x = torch.randn(n, d, generator=g, dtype=F64)
    # true expected revenue per option: heterogeneous, linear in x
    w_true = torch.randn(d, m, generator=g, dtype=F64)
    mu = x @ w_true + torch.tensor([0.0, 0.3, 0.2], dtype=F64)
    costs = torch.tensor([0.0, 0.5, 1.0], dtype=F64).expand(n, m)
    lam = 0.4  # fixed multiplier: the policy maximises revenue - lam * cost
    t = torch.randint(0, m, (n,), generator=g)
    rev = mu[torch.arange(n), t] + 0.5 * torch.randn(n, generator=g, dtype=F64)

    def true_value(weight):
        choice = (x @ weight - lam * costs).argmax(1)
        return float((mu - lam * costs)[torch.arange(n), choice].mean())

    weight = (0.01 * torch.randn(d, m, generator=g, dtype=F64)).requires_grad_()
    start = true_value(weight.detach())
    opt = torch.optim.Adam([weight], lr=0.1)
    prop = torch.full((n,), 1.0 / m, dtype=F64)  # the design's assignment probability
    for _ in range(60):
        opt.zero_grad()
        losses.ppl_loss(x @ weight, costs, t, rev, lam, prop, tau=0.5).backward()
        opt.step()
    end = true_value(weight.detach())
    best = float((mu - lam * costs).max(1).values.mean())
    assert end > start + 0.3 * (best - start), (start, end, best)


# --------------------------------------------------------------------------------------------------
# op contract: opcheck, compile, bad inputs, empty / non-contiguous, threads, dtypes
# --------------------------------------------------------------------------------------------------


@needs_ext
@pytest.mark.parametrize("with_cost", [False, True])
def test_opcheck(with_cost):
    r, c, t, rev, cost, prop = decision_batch(n=16, m=3, seed=50, with_cost=with_cost)
    lam = lam_of([0.5] if not with_cost else [0.2, 0.8])
    rg, cg = r.clone().requires_grad_(), c.clone().requires_grad_()
    g = torch.tensor(1.3, dtype=F64)
    torch.library.opcheck(torch.ops.bidfcl.ppl_loss, (rg, cg, t, rev, cost, lam, prop, 0.7))
    torch.library.opcheck(torch.ops.bidfcl.pifd_loss, (rg, cg, t, rev, cost, lam, prop, 0.3))
    torch.library.opcheck(torch.ops.bidfcl.pifd_loss, (rg, cg, t, rev, cost, lam, prop, None))
    torch.library.opcheck(torch.ops.bidfcl.ppl_loss_backward, (g, r, c, t, rev, cost, lam, prop, 0.7))
    torch.library.opcheck(torch.ops.bidfcl.pifd_loss_backward, (g, r, c, t, rev, cost, lam, prop, None))


@needs_ext
def test_losses_compile_fullgraph():
    r, c, t, rev, _, prop = decision_batch(n=64, m=3, seed=51)

    def step(r, c, lam):
        return losses.ppl_loss(r, c, t, rev, lam, prop, tau=0.5) + losses.pifd_loss(r, c, t, rev, lam, prop, clip=0.3)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    lam = torch.tensor(0.5, dtype=F64)
    r1, r2 = r.clone().requires_grad_(), r.clone().requires_grad_()
    out = compiled(r1, c, lam)
    out.backward()
    expected = step(r2, c, lam)
    expected.backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(r1.grad, r2.grad)


@pytest.mark.parametrize("op", ["ppl", "pifd"])
def test_bad_inputs_raise_clear_errors(op):
    r, c, t, rev, _, prop = decision_batch(n=6, m=3, seed=52)
    fn = losses.ppl_loss if op == "ppl" else losses.pifd_loss
    cases = [
        (dict(treatment=torch.tensor([0, 1, 2, 3, 0, 1])), r"treatment must be in \[0, M\) = \[0, 3\), got 3 at row 3"),
        (dict(treatment=torch.tensor([0, -1, 2, 1, 0, 1])), r"treatment must be in \[0, M\)"),
        (
            dict(propensity=torch.tensor([0.5, 0.0, 0.5, 0.5, 0.5, 0.5], dtype=F64)),
            r"propensity must be in \(0, 1\], got 0",
        ),
        (
            dict(propensity=torch.tensor([0.5, 1.5, 0.5, 0.5, 0.5, 0.5], dtype=F64)),
            r"propensity must be in \(0, 1\], got 1.5",
        ),
        (dict(revenue=rev[:5]), r"revenue must have shape \[6\]"),
        (dict(treatment=t[:5]), r"treatment must have shape \[6\]"),
        (dict(c_hat=c[:, :2]), r"r_hat and c_hat must have the same shape"),
        (dict(r_hat=r.float()), r"must have the same dtype"),
        (
            dict(r_hat=r.index_put((torch.tensor([2]), torch.tensor([1])), torch.tensor(float("nan"), dtype=F64))),
            r"r_hat must be finite, got nan at \[2, 1\]",
        ),
        (
            dict(revenue=rev.index_put((torch.tensor([4]),), torch.tensor(float("inf"), dtype=F64))),
            r"revenue must be finite, got inf at row 4",
        ),
        (dict(r_hat=r[:, :1], c_hat=c[:, :1]), r"at least two options"),
        (dict(treatment=t.int()), r"treatment must be int64"),
        (dict(lam=float("nan")), r"lam must be finite"),
    ]
    for override, msg in cases:
        kwargs = dict(r_hat=r, c_hat=c, treatment=t, revenue=rev, lam=0.5, propensity=prop)
        kwargs.update(override)
        with pytest.raises(RuntimeError, match=msg):
            fn(**kwargs)
    with pytest.raises(RuntimeError, match="tau must be finite and > 0"):
        losses.ppl_loss(r, c, t, rev, 0.5, prop, tau=0.0)
    with pytest.raises(RuntimeError, match="clip must be None or finite and > 0"):
        losses.pifd_loss(r, c, t, rev, 0.5, prop, clip=-1.0)
    with pytest.raises(ValueError, match="must hold one multiplier"):
        fn(r, c, t, rev, torch.tensor([0.1, 0.2], dtype=F64), prop)


@pytest.mark.parametrize("fn", [losses.ppl_loss, losses.pifd_loss])
def test_empty_batch(fn):
    r = torch.zeros(0, 3, dtype=F64, requires_grad=True)
    c = torch.zeros(0, 3, dtype=F64)
    t = torch.zeros(0, dtype=torch.long)
    rev = torch.zeros(0, dtype=F64)
    loss = fn(r, c, t, rev, 0.5, torch.zeros(0, dtype=F64))
    assert loss.shape == () and float(loss.detach()) == 0.0
    loss.backward()
    assert r.grad.shape == (0, 3)


@pytest.mark.parametrize("fn", [losses.ppl_loss, losses.pifd_loss])
def test_non_contiguous_inputs(fn):
    r, c, t, rev, _, prop = decision_batch(n=25, m=4, seed=53)
    r_nc = r.t().contiguous().t()  # same values, column-major strides
    c_nc = torch.stack([c, c], dim=2)[:, :, 0]
    rev_nc = torch.stack([rev, rev], 1)[:, 0]
    assert not r_nc.is_contiguous() and not c_nc.is_contiguous() and not rev_nc.is_contiguous()
    a, b = r.clone().requires_grad_(), r_nc.clone().requires_grad_()
    fn(a, c, t, rev, 0.3, prop).backward()
    loss_nc = fn(b, c_nc, t, rev_nc, 0.3, prop)
    loss_nc.backward()
    torch.testing.assert_close(loss_nc, fn(r, c, t, rev, 0.3, prop), rtol=0, atol=0)
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


@needs_ext
def test_same_result_with_one_and_two_threads():
    r, c, t, rev, cost, prop = decision_batch(n=60_000, m=4, seed=54, with_cost=True)
    lam = lam_of([0.3, 0.9])
    g = torch.tensor(1.0, dtype=F64)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(
                [
                    ops.ppl_loss(r, c, t, rev, cost, lam, prop, 0.5),
                    *ops.ppl_loss_backward(g, r, c, t, rev, cost, lam, prop, 0.5),
                    ops.pifd_loss(r, c, t, rev, cost, lam, prop, None),
                    *ops.pifd_loss_backward(g, r, c, t, rev, cost, lam, prop, 0.3),
                ]
            )
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("fn", ["ppl", "pifd"])
def test_float32_close_to_float64(fn):
    r, c, t, rev, _, prop = decision_batch(n=500, m=5, seed=55)
    f = losses.ppl_loss if fn == "ppl" else losses.pifd_loss
    r32, c32 = r.float().requires_grad_(), c.float().requires_grad_()
    r64, c64 = r.clone().requires_grad_(), c.clone().requires_grad_()
    l32 = f(r32, c32, t, rev.float(), 0.5, prop.float())
    l64 = f(r64, c64, t, rev, 0.5, prop)
    l32.backward()
    l64.backward()
    assert l32.dtype == torch.float32 and r32.grad.dtype == torch.float32
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(l32.double(), l64, rtol=1e3 * eps, atol=1e3 * eps)
    if fn == "ppl":  # PIFD gradients divide by score gaps: float32 gaps are not float64 gaps
        torch.testing.assert_close(r32.grad.double(), r64.grad, rtol=1e3 * eps, atol=1e3 * eps)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 30),
    m=st.integers(2, 6),
    seed=st.integers(0, 10_000),
    tau=st.floats(0.1, 5.0),
    use_cost=st.booleans(),
)
def test_property_ops_match_twins(n, m, seed, tau, use_cost):
    r, c, t, rev, cost, prop = decision_batch(n=n, m=m, seed=seed, with_cost=use_cost)
    lam = lam_of([0.5] if not use_cost else [0.1, 1.0])
    g = torch.tensor(0.7, dtype=F64)
    torch.testing.assert_close(
        ops.ppl_loss(r, c, t, rev, cost, lam, prop, tau),
        ref.ppl_loss(r, c, t, rev, cost, lam, prop, tau),
        rtol=1e-12,
        atol=1e-14,
    )
    for a, b in zip(
        ops.ppl_loss_backward(g, r, c, t, rev, cost, lam, prop, tau),
        ref.ppl_loss_backward(g, r, c, t, rev, cost, lam, prop, tau),
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    for a, b in zip(
        ops.pifd_loss_backward(g, r, c, t, rev, cost, lam, prop, None),
        ref.pifd_loss_backward(g, r, c, t, rev, cost, lam, prop, None),
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # the softmax loss lies between the worst and best sums of matched rewards
    w = weights(rev, cost, lam, prop)
    loss = float(ops.ppl_loss(r, c, t, rev, cost, lam, prop, tau))
    assert -float(w.clamp(min=0).sum()) - 1e-12 <= loss <= float((-w).clamp(min=0).sum()) + 1e-12


# --------------------------------------------------------------------------------------------------
# CUDA: the same ops on the GPU must match the CPU op
# --------------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_cost", [False, True])
def test_cuda_matches_cpu(dtype, with_cost):
    r, c, t, rev, cost, prop = decision_batch(n=5000, m=5, dtype=dtype, seed=60, with_cost=with_cost)
    lam = lam_of([0.5] if not with_cost else [0.2, 0.8], dtype)
    g = torch.tensor(1.3, dtype=dtype)
    dev = "cuda"
    cu = [x.to(dev) if x is not None else None for x in (r, c, t, rev, cost, lam, prop, g)]
    rc, cc, tc, revc, costc, lamc, propc, gc = cu
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        ops.ppl_loss(rc, cc, tc, revc, costc, lamc, propc, 0.7).cpu(),
        ops.ppl_loss(r, c, t, rev, cost, lam, prop, 0.7),
        **tol,
    )
    torch.testing.assert_close(
        ops.pifd_loss(rc, cc, tc, revc, costc, lamc, propc, None).cpu(),
        ops.pifd_loss(r, c, t, rev, cost, lam, prop, None),
        **tol,
    )
    for a, b in zip(
        ops.ppl_loss_backward(gc, rc, cc, tc, revc, costc, lamc, propc, 0.7),
        ops.ppl_loss_backward(g, r, c, t, rev, cost, lam, prop, 0.7),
    ):
        torch.testing.assert_close(a.cpu(), b, **tol)
    for clip in (None, 0.3):
        for a, b in zip(
            ops.pifd_loss_backward(gc, rc, cc, tc, revc, costc, lamc, propc, clip),
            ops.pifd_loss_backward(g, r, c, t, rev, cost, lam, prop, clip),
        ):
            torch.testing.assert_close(a.cpu(), b, **tol)
    bad = tc.clone()
    bad[7] = 9
    with pytest.raises(RuntimeError, match="treatment must be in"):
        ops.ppl_loss(rc, cc, bad, revc, costc, lamc, propc, 0.7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_loss_many_blocks_and_chunks_match_twin(dtype):
    # N spans several 64-row blocks and 4096-row chunks, with a partial block at the end
    r, c, t, rev, cost, prop = decision_batch(n=9_001, m=3, dtype=dtype, seed=70, with_cost=True)
    lam = lam_of([0.25, 1.5], dtype)
    g = torch.tensor(0.9, dtype=dtype)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == F64 else dict(rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(
        ops.ppl_loss(r, c, t, rev, cost, lam, prop, 0.6), ref.ppl_loss(r, c, t, rev, cost, lam, prop, 0.6), **tol
    )
    for a, b in zip(
        ops.ppl_loss_backward(g, r, c, t, rev, cost, lam, prop, 0.6),
        ref.ppl_loss_backward(g, r, c, t, rev, cost, lam, prop, 0.6),
    ):
        torch.testing.assert_close(a, b, **tol)


# --------------------------------------------------------------------------------------------------
# fused forward (<loss>_with_grad): one pass gives the loss and the unit-upstream gradient; autograd
# on CPU saves that gradient and its backward only scales it
# --------------------------------------------------------------------------------------------------

FUSED = [("ppl", 0.7), ("pifd", None), ("pifd", 0.3)]


def fused_ops(name):
    """(forward, backward, with_grad) of a loss: the compiled ops, or the twins without the extension."""
    return getattr(ops, f"{name}_loss"), getattr(ops, f"{name}_loss_backward"), getattr(ops, f"{name}_loss_with_grad")


@pytest.mark.parametrize("name,extra", FUSED)
@pytest.mark.parametrize("m", [2, 3, 4, 5, 7, 8, 16])  # the fixed-M specialisations and the generic loop
@pytest.mark.parametrize("with_cost", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_with_grad_is_forward_and_unit_backward_bit_for_bit(name, extra, m, with_cost, dtype):
    forward, backward, fused = fused_ops(name)
    # 300 rows: several 64-row blocks and a ragged last one
    r, c, t, rev, cost, prop = decision_batch(n=300, m=m, dtype=dtype, seed=60 + m, with_cost=with_cost)
    lam = lam_of([0.5] if not with_cost else [0.2, 0.9], dtype)
    loss, gr, gc = fused(r, c, t, rev, cost, lam, prop, extra)
    exp_gr, exp_gc = backward(torch.ones((), dtype=dtype), r, c, t, rev, cost, lam, prop, extra)
    assert torch.equal(loss, forward(r, c, t, rev, cost, lam, prop, extra))
    assert torch.equal(gr, exp_gr) and torch.equal(gc, exp_gc)


@pytest.mark.parametrize("name,extra", FUSED)
def test_with_grad_matches_twin(name, extra):
    r, c, t, rev, cost, prop = decision_batch(n=70, m=6, seed=61, with_cost=True)
    lam = lam_of([0.1, 0.6])
    fused, twin = fused_ops(name)[2], getattr(ref, f"{name}_loss_with_grad")
    for a, b in zip(fused(r, c, t, rev, cost, lam, prop, extra), twin(r, c, t, rev, cost, lam, prop, extra)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fn", [losses.ppl_loss, losses.pifd_loss])
def test_autograd_scales_saved_gradient_by_upstream(fn):
    r, c, t, rev, _, prop = decision_batch(n=90, m=5, seed=62)
    lam = lam_of([0.4])
    op_backward = ops.ppl_loss_backward if fn is losses.ppl_loss else ops.pifd_loss_backward
    extra = 1.0 if fn is losses.ppl_loss else None
    rg, cg = r.clone().requires_grad_(), c.clone().requires_grad_()
    (fn(rg, cg, t, rev, lam, prop) * -2.5).backward()
    exp_gr, exp_gc = op_backward(torch.tensor(-2.5, dtype=F64), r, c, t, rev, None, lam, prop, extra)
    torch.testing.assert_close(rg.grad, exp_gr, rtol=1e-13, atol=0)
    torch.testing.assert_close(cg.grad, exp_gc, rtol=1e-13, atol=0)
    # no grad wanted: the plain forward, same value, no graph
    with torch.no_grad():
        plain = fn(rg, cg, t, rev, lam, prop)
    assert plain.grad_fn is None
    torch.testing.assert_close(plain, fn(r, c, t, rev, lam, prop), rtol=0, atol=0)


@pytest.mark.parametrize("name,extra", FUSED)
def test_with_grad_empty_and_non_contiguous(name, extra):
    fused = fused_ops(name)[2]
    z = torch.zeros(0, 3, dtype=F64)
    e = torch.zeros(0, dtype=F64)
    loss, gr, gc = fused(z, z, torch.zeros(0, dtype=torch.long), e, None, lam_of([0.5]), e, extra)
    assert float(loss) == 0.0 and gr.shape == (0, 3) and gc.shape == (0, 3)
    r, c, t, rev, _, prop = decision_batch(n=33, m=4, seed=63)
    r_nc, c_nc = r.t().contiguous().t(), torch.stack([c, c], dim=2)[:, :, 0]
    rev_nc = torch.stack([rev, rev], 1)[:, 0]
    assert not (r_nc.is_contiguous() or c_nc.is_contiguous() or rev_nc.is_contiguous())
    lam = lam_of([0.3])
    for a, b in zip(fused(r_nc, c_nc, t, rev_nc, None, lam, prop, extra), fused(r, c, t, rev, None, lam, prop, extra)):
        assert torch.equal(a, b)


@needs_ext
def test_with_grad_opcheck():
    r, c, t, rev, cost, prop = decision_batch(n=16, m=3, seed=64, with_cost=True)
    lam = lam_of([0.2, 0.8])
    torch.library.opcheck(torch.ops.bidfcl.ppl_loss_with_grad, (r, c, t, rev, cost, lam, prop, 0.7))
    torch.library.opcheck(torch.ops.bidfcl.pifd_loss_with_grad, (r, c, t, rev, cost, lam, prop, 0.3))
    torch.library.opcheck(torch.ops.bidfcl.pifd_loss_with_grad, (r, c, t, rev, None, lam[:1], prop, None))


@pytest.mark.parametrize("fn", [losses.ppl_loss, losses.pifd_loss])
def test_second_backward_with_retained_graph_is_the_same(fn):
    # the first backward scales the saved unit gradient in place; a second one must not reuse it
    r, c, t, rev, _, prop = decision_batch(n=40, m=4, seed=65)
    rg = r.clone().requires_grad_()
    loss = fn(rg, c, t, rev, 0.4, prop) * 3.0
    loss.backward(retain_graph=True)
    first = rg.grad.clone()
    rg.grad = None
    loss.backward()
    torch.testing.assert_close(rg.grad, first, rtol=1e-14, atol=0)


@needs_ext
def test_with_grad_same_bits_with_one_and_two_threads():
    r, c, t, rev, cost, prop = decision_batch(n=20_000, m=8, dtype=torch.float32, seed=66, with_cost=True)
    lam = lam_of([0.3, 0.7], torch.float32)
    before = torch.get_num_threads()
    try:
        for op, extra in ((ops.ppl_loss_with_grad, 0.8), (ops.pifd_loss_with_grad, 0.3)):
            torch.set_num_threads(1)
            one = op(r, c, t, rev, cost, lam, prop, extra)
            torch.set_num_threads(2)
            two = op(r, c, t, rev, cost, lam, prop, extra)
            assert all(torch.equal(a, b) for a, b in zip(one, two))
    finally:
        torch.set_num_threads(before)
