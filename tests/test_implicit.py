"""Tests for bidfcl.implicit / bidfcl.linear_solve: CG, the compiled CG driver, hypergradients."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bidfcl
from bidfcl import implicit
from bidfcl.linear_solve import cg
from conftest import DEVICES, needs_cuda, needs_ext

BACKENDS = ["python", pytest.param("cpp", marks=needs_ext)]
# These problems are tiny: with 2 intra-op threads on a busy 2-core machine each small op can wait
# milliseconds for a descheduled worker (30x slower suite). Thread counts are exercised on purpose
# in test_hessian_cg_deterministic_across_threads.
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def random_spd(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """M'M/n + I/2: a well-conditioned SPD matrix (Marchenko-Pastur spectrum shifted by 1/2)."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=dtype)
    return m.T @ m / n + 0.5 * torch.eye(n, dtype=dtype)


# --------------------------------------------------------------------------------------------------
# CG on explicit systems
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 60, 500])
def test_cg_spd_matches_linalg_solve(n):
    a = random_spd(n, seed=n)
    b = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x, state = cg(lambda v: a @ v, b, max_iter=n, tol=1e-11)
    exact = torch.linalg.solve(a, b)
    assert state.status == "converged" and state.iter_num <= n
    assert float(torch.linalg.norm(a @ x - b) / torch.linalg.norm(b)) <= 1e-8
    assert float(torch.linalg.norm(x - exact) / torch.linalg.norm(exact)) <= 1e-8
    assert state.error <= 1e-11


def test_cg_block_list_matches_single_tensor():
    a = random_spd(30, seed=3)
    b = torch.randn(30, dtype=torch.float64)
    x_flat, s_flat = cg(lambda v: a @ v, b, tol=0.0, max_iter=12)
    shapes = [(2, 5), (20,)]

    def matvec(blocks):
        y = a @ torch.cat([t.reshape(-1) for t in blocks])
        return [y[:10].reshape(2, 5), y[10:]]

    x_blocks, s_blocks = cg(matvec, [b[:10].reshape(2, 5), b[10:]], tol=0.0, max_iter=12)
    assert [t.shape for t in x_blocks] == [torch.Size(s) for s in shapes]
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in x_blocks]), x_flat, rtol=1e-12, atol=1e-14)
    assert s_blocks.iter_num == s_flat.iter_num == 12 and s_blocks.status == "max_iter"


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 25), seed=st.integers(0, 10_000), damping=st.sampled_from([0.0, 0.3]))
def test_cg_property_solves_damped_spd(n, seed, damping):
    a = random_spd(n, seed)
    b = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    x, state = cg(lambda v: a @ v, b, max_iter=4 * n, tol=1e-12, damping=damping)
    exact = torch.linalg.solve(a + damping * torch.eye(n, dtype=torch.float64), b)
    assert state.converged
    torch.testing.assert_close(x, exact, rtol=1e-8, atol=1e-10)


def test_cg_zero_rhs_and_warm_start():
    a = random_spd(10, seed=0)
    x, state = cg(lambda v: a @ v, torch.zeros(10, dtype=torch.float64))
    assert state.status == "converged" and state.iter_num == 0 and state.num_matvec == 0 and state.error == 0.0
    assert torch.count_nonzero(x) == 0
    b = torch.randn(10, dtype=torch.float64)
    exact = torch.linalg.solve(a, b)
    x, state = cg(lambda v: a @ v, b, x0=exact, tol=1e-8)
    assert state.converged and state.iter_num == 0 and state.num_matvec == 1
    torch.testing.assert_close(x, exact)


def test_cg_check_every_does_not_change_iterates():
    a = random_spd(40, seed=5)
    b = torch.randn(40, dtype=torch.float64)
    ref, s1 = cg(lambda v: a @ v, b, tol=1e-6, check_every=1)
    for every in (3, 7, 100):
        x, s = cg(lambda v: a @ v, b, tol=1e-6, check_every=every)
        assert torch.equal(x, ref)
        assert s.iter_num == s1.iter_num and s.status == s1.status and s.error == s1.error
        assert s1.num_matvec <= s.num_matvec < s1.num_matvec + every


def test_cg_indefinite_stops_on_nonpositive_curvature():
    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(-3.0, 5.0, 20, dtype=torch.float64)) @ q.T
    b = torch.randn(20, generator=g, dtype=torch.float64)
    x, state = cg(lambda v: a @ v, b, max_iter=50)
    assert state.status == "nonpositive_curvature" and state.nonpositive_curvature
    assert state.iter_num < 20 and bool(torch.isfinite(x).all())
    # the returned iterate is the CG iterate before the failing step: rerun with that many steps
    x_prefix, s_prefix = cg(lambda v: a @ v, b, max_iter=state.iter_num, stop_on_nonpositive_curvature=False)
    assert torch.equal(x, x_prefix) and s_prefix.status == "max_iter"
    # enough damping makes the operator positive definite: CG converges
    x_d, s_d = cg(lambda v: a @ v, b, max_iter=200, tol=1e-10, damping=3.5)
    assert s_d.converged
    torch.testing.assert_close(x_d, torch.linalg.solve(a + 3.5 * torch.eye(20, dtype=torch.float64), b))


# --------------------------------------------------------------------------------------------------
# Hessian CG: compiled driver vs Python twin
# --------------------------------------------------------------------------------------------------


def mlp_problem(dtype=torch.float64, device="cpu", seed=0, batch=64, hidden=8, unused=False):
    """A small 2-layer MLP regression loss and its parameter list (mixed shapes)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 5, generator=g, dtype=dtype).to(device)
    y = torch.randn(batch, 2, generator=g, dtype=dtype).to(device)
    shapes = [(5, hidden), (hidden,), (hidden, 2), (2,)] + ([(3,)] if unused else [])
    params = [(0.5 * torch.randn(s, generator=g, dtype=dtype)).to(device).requires_grad_() for s in shapes]

    def loss_fn(p):
        h = torch.tanh(x @ p[0] + p[1])
        return ((h @ p[2] + p[3] - y) ** 2).mean() + 1e-2 * sum((t**2).sum() for t in p[:4])

    return params, loss_fn


def dense_hessian(loss_fn, params):
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    shapes = [p.shape for p in params]

    def f(v):
        blocks, o = [], 0
        for s in shapes:
            n = math.prod(s)
            blocks.append(v[o : o + n].reshape(s))
            o += n
        return loss_fn(blocks)

    return torch.autograd.functional.hessian(f, flat)


@needs_ext
@pytest.mark.parametrize("unused", [False, True])
def test_cpp_driver_and_python_twin_same_iterates(unused):
    params, loss_fn = mlp_problem(unused=unused)
    b = [torch.randn_like(p) for p in params]
    for k in range(1, 9):
        # damping 1.5 > -lambda_min(H) ~ 1.07: positive definite, so every step is taken
        rc = implicit.solve_hessian(loss_fn(params), params, b, max_iter=k, tol=0.0, damping=1.5, backend="cpp")
        rp = implicit.solve_hessian(loss_fn(params), params, b, max_iter=k, tol=0.0, damping=1.5, backend="python")
        assert rc.state.iter_num == rp.state.iter_num == k
        assert rc.state.status == rp.state.status and rc.state.num_matvec == rp.state.num_matvec
        assert rc.state.backend == "cpp" and rp.state.backend == "python"
        for u, v in zip(rc.solution, rp.solution):
            torch.testing.assert_close(u, v, rtol=1e-13, atol=1e-15)
        assert math.isclose(rc.state.error, rp.state.error, rel_tol=1e-10)
    # the loss-taking entry point and the gradient-taking one agree, for any check_every
    grads = torch.autograd.grad(loss_fn(params), params, create_graph=True, allow_unused=True)
    a = bidfcl._ops._C.hessian_cg(loss_fn(params), params, b, None, 100, 1e-9, 1.5, 1, True)
    c = bidfcl._ops._C.hessian_cg_from_grads(list(grads), params, b, None, 100, 1e-9, 1.5, 4, True)
    assert a[1] == c[1] and a[4] == c[4] == 1
    for u, v in zip(a[0], c[0]):
        assert torch.equal(u, v)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("unused", [False, True])
def test_hessian_solve_matches_dense(backend, unused):
    params, loss_fn = mlp_problem(unused=unused)
    b = [torch.randn_like(p) for p in params]
    hess = dense_hessian(loss_fn, params)
    damping = 1.5  # lambda_min(H) ~ -1.07 and the unused block is zero: damping makes it positive definite
    res = implicit.solve_hessian(loss_fn(params), params, b, max_iter=500, tol=1e-11, damping=damping, backend=backend)
    assert res.state.converged
    flat_b = torch.cat([t.reshape(-1) for t in b])
    exact = torch.linalg.solve(hess + damping * torch.eye(len(flat_b), dtype=torch.float64), flat_b)
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in res.solution]), exact, rtol=1e-8, atol=1e-10)


class _CubeFn(torch.autograd.Function):
    """x**3 through a Python autograd node, twice differentiable (its backward is torch ops)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_hessian_through_python_autograd_function(backend):
    # the compiled driver releases the GIL; Python nodes in the graph must still run
    x = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    loss = _CubeFn.apply(x).sum()  # H = diag(6 x)
    b = [torch.ones(3, dtype=torch.float64)]
    res = implicit.solve_hessian(loss, [x], b, tol=1e-12, backend=backend)
    torch.testing.assert_close(res.solution[0], 1 / (6 * x.detach()))


@needs_ext
def test_cpp_driver_runs_alongside_python_threads():
    params, loss_fn = mlp_problem(batch=256, hidden=16)
    b = [torch.randn_like(p) for p in params]
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                implicit.solve_hessian(loss_fn(params), params, b, max_iter=20, tol=0.0, backend="cpp")
            )
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3
    for r in results[1:]:
        for u, v in zip(r.solution, results[0].solution):
            torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hessian_cg_deterministic_across_threads(backend):
    params, loss_fn = mlp_problem(batch=512, hidden=16)
    b = [torch.randn_like(p) for p in params]
    old = torch.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            torch.set_num_threads(n)
            out.append(implicit.solve_hessian(loss_fn(params), params, b, max_iter=15, tol=0.0, backend=backend))
    finally:
        torch.set_num_threads(old)
    for u, v in zip(out[0].solution, out[1].solution):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hessian_cg_indefinite_stops_finite(backend):
    # L = 0.5 theta' A theta with A indefinite; block structure over two parameters
    g = torch.Generator().manual_seed(4)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(-2.0, 4.0, 12, dtype=torch.float64)) @ q.T
    p = [
        torch.randn(3, 2, generator=g, dtype=torch.float64).requires_grad_(),
        torch.randn(6, generator=g, dtype=torch.float64).requires_grad_(),
    ]
    theta = torch.cat([p[0].reshape(-1), p[1]])
    loss = 0.5 * theta @ a @ theta
    b = [torch.randn(3, 2, dtype=torch.float64), torch.randn(6, dtype=torch.float64)]
    res = implicit.solve_hessian(loss, p, b, max_iter=50, backend=backend)
    assert res.state.status == "nonpositive_curvature"
    assert all(bool(torch.isfinite(t).all()) for t in res.solution)
    flat_b = torch.cat([t.reshape(-1) for t in b])
    x_ref, s_ref = cg(lambda v: a @ v, flat_b, max_iter=50)
    assert s_ref.iter_num == res.state.iter_num
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in res.solution]), x_ref, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# bi-level ridge regression with a closed form
# --------------------------------------------------------------------------------------------------


class Ridge:
    """Inner: weighted ridge on (X, y) with per-sample weights exp(s_i) and penalty exp(l):

        L_low(w, c; s, l) = (1/n) sum_i exp(s_i) (x_i.w + c - y_i)^2 + exp(l) (|w|^2 + c^2)
        L_up(w, c; s, l)  = (1/m) |X_v w + c - y_v|^2 + 0.1 l^2        (held-out data, a direct term)

    With Z = [X, 1], A = Z'SZ/n + exp(l) I: theta* = A^{-1} Z'Sy/n, and with g = grad_theta L_up:
        dtheta*/ds_i = exp(s_i) A^{-1} z_i (y_i - z_i.theta*)/n,   dtheta*/dl = -exp(l) A^{-1} theta*.
    """

    def __init__(self, n=40, m=30, d=5, dtype=torch.float64, device="cpu", seed=0):
        g = torch.Generator().manual_seed(seed)
        w_true = torch.randn(d, generator=g, dtype=torch.float64)
        self.x = torch.randn(n, d, generator=g, dtype=torch.float64)
        self.y = self.x @ w_true + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
        self.xv = torch.randn(m, d, generator=g, dtype=torch.float64)
        self.yv = self.xv @ w_true + 0.5 * torch.randn(m, generator=g, dtype=torch.float64)
        self.s0 = 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
        self.l0 = torch.tensor(-1.0, dtype=torch.float64)
        self.n, self.m, self.d = n, m, d
        self.dtype, self.device = dtype, device
        self.t = {k: getattr(self, k).to(device=device, dtype=dtype) for k in ("x", "y", "xv", "yv")}

    # float64 closed forms on the CPU ---------------------------------------------------------------
    def z(self, x):
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)

    def theta_star(self, s, l):
        z = self.z(self.x)
        a = z.T @ (s.exp()[:, None] * z) / self.n + l.exp() * torch.eye(self.d + 1, dtype=torch.float64)
        return torch.linalg.solve(a, z.T @ (s.exp() * self.y) / self.n), a

    def upper_value(self, s, l):
        theta, _ = self.theta_star(s, l)
        return ((self.z(self.xv) @ theta - self.yv) ** 2).mean() + 0.1 * l**2

    def analytic(self, s, l):
        theta, a = self.theta_star(s, l)
        zv, z = self.z(self.xv), self.z(self.x)
        g = 2 * zv.T @ (zv @ theta - self.yv) / self.m
        v = torch.linalg.solve(a, g)
        grad_s = s.exp() * (z @ v) * (self.y - z @ theta) / self.n
        grad_l = -l.exp() * (v @ theta) + 0.2 * l
        return grad_s, grad_l

    # the losses on the given inner/outer lists --------------------------------------------------------
    def lower(self, inner, outer):
        w, c = inner[0], inner[1]
        s, l = outer[0], outer[1]
        resid = self.t["x"] @ w + c - self.t["y"]
        return (s.exp() * resid**2).mean() + l.exp() * ((w**2).sum() + c**2)

    def upper(self, inner, outer):
        w, c = inner[0], inner[1]
        return ((self.t["xv"] @ w + c - self.t["yv"]) ** 2).mean() + 0.1 * outer[1] ** 2

    def params(self, s=None, l=None):
        s = self.s0 if s is None else s
        l = self.l0 if l is None else l
        theta, _ = self.theta_star(s, l)
        cast = dict(dtype=self.dtype, device=self.device)
        inner = [theta[:-1].to(**cast).clone().requires_grad_(), theta[-1].to(**cast).clone().requires_grad_()]
        outer = [s.to(**cast).clone().requires_grad_(), l.to(**cast).clone().requires_grad_()]
        return inner, outer


def rel_err(a, b):
    a, b = a.detach(), b.detach()
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ridge_hypergradient_matches_analytic_and_finite_differences(backend):
    prob = Ridge()
    inner, outer = prob.params()
    res = implicit.hypergradient(prob.lower, prob.upper, inner, outer, max_iter=50, tol=1e-12, backend=backend)
    assert res.state.converged and res.state.iter_num <= prob.d + 1 + 2
    assert not any(g.requires_grad for g in res.grads)
    grad_s, grad_l = prob.analytic(prob.s0, prob.l0)
    assert rel_err(res.grads[0], grad_s) <= 1e-6
    assert abs(float(res.grads[1] - grad_l)) <= 1e-6 * abs(float(grad_l))
    assert math.isclose(float(res.upper_loss), float(prob.upper_value(prob.s0, prob.l0)), rel_tol=1e-12)
    # central finite differences of the closed-form upper objective
    eps = 1e-5
    fd_s = torch.empty_like(prob.s0)
    for i in range(prob.n):
        e = torch.zeros_like(prob.s0)
        e[i] = eps
        fd_s[i] = (prob.upper_value(prob.s0 + e, prob.l0) - prob.upper_value(prob.s0 - e, prob.l0)) / (2 * eps)
    fd_l = (prob.upper_value(prob.s0, prob.l0 + eps) - prob.upper_value(prob.s0, prob.l0 - eps)) / (2 * eps)
    assert rel_err(res.grads[0], fd_s) <= 1e-4
    assert abs(float(res.grads[1] - fd_l)) <= 1e-4 * abs(float(fd_l))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_ridge_hypergradient_float32(backend, device):
    prob = Ridge(dtype=torch.float32, device=device)
    inner, outer = prob.params()
    res = implicit.hypergradient(prob.lower, prob.upper, inner, outer, tol=1e-6, backend=backend)
    assert res.grads[0].dtype == torch.float32 and res.grads[0].device.type == device
    grad_s, grad_l = prob.analytic(prob.s0, prob.l0)
    assert rel_err(res.grads[0].double().cpu(), grad_s) <= 1e-3
    assert abs(float(res.grads[1]) - float(grad_l)) <= 1e-3 * abs(float(grad_l))


@needs_cuda
@pytest.mark.parametrize("backend", BACKENDS)
def test_ridge_hypergradient_cuda_matches_cpu(backend):
    out = {}
    for device in ("cpu", "cuda"):
        prob = Ridge(device=device)
        inner, outer = prob.params()
        out[device] = implicit.hypergradient(
            prob.lower, prob.upper, inner, outer, tol=1e-12, backend=backend, check_every=1
        )
    assert out["cpu"].state.iter_num == out["cuda"].state.iter_num
    for u, v in zip(out["cpu"].grads, out["cuda"].grads):
        torch.testing.assert_close(v.cpu(), u, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unused_parameters_get_zero_blocks(backend):
    prob = Ridge()
    inner, outer = prob.params()
    spare_inner = torch.randn(4, dtype=torch.float64, requires_grad=True)  # in neither loss
    spare_outer = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)

    def lower(i, o):
        return prob.lower(i[:2], o[:2]) + (i[2] ** 2).sum()  # spare inner: own quadratic, no coupling

    def upper(i, o):
        return prob.upper(i[:2], o[:2])

    res = implicit.hypergradient(lower, upper, inner + [spare_inner], outer + [spare_outer], tol=1e-12, backend=backend)
    ref = implicit.hypergradient(prob.lower, prob.upper, inner, outer, tol=1e-12, backend=backend)
    assert res.grads[2].shape == (2, 3) and torch.count_nonzero(res.grads[2]) == 0
    for u, v in zip(res.grads[:2], ref.grads):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)

    # a spare inner parameter that no loss touches at all (zero Hessian block, zero rhs)
    res2 = implicit.hypergradient(prob.lower, upper, inner + [spare_inner], outer, tol=1e-12, backend=backend)
    for u, v in zip(res2.grads, ref.grads):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hypergradient_indefinite_lower_stays_finite(backend):
    # lower loss with a saddle in theta: CG stops on curvature and the hypergradient is finite
    theta = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64, requires_grad=True)
    phi = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)

    def lower(i, o):
        t, f = i[0], o[0]
        return t[0] ** 2 - t[1] ** 2 + 0.5 * t[2] ** 2 + f[0] * t[0] * t[1] + f[1] * t[2]

    def upper(i, o):
        return (i[0] ** 2).sum() + i[0].sum()

    res = implicit.hypergradient(lower, upper, [theta], [phi], backend=backend)
    assert res.state.status == "nonpositive_curvature"
    assert all(bool(torch.isfinite(g).all()) for g in res.grads)


def test_unrolled_approaches_implicit():
    prob = Ridge()
    inner, outer = prob.params()
    target = implicit.hypergradient(prob.lower, prob.upper, inner, outer, tol=1e-12).grads
    lam_max = float(torch.linalg.eigvalsh(2 * prob.theta_star(prob.s0, prob.l0)[1]).max())
    lr = 1.0 / lam_max
    errors = []
    for k in (1, 5, 20, 300):
        g = implicit.unrolled(prob.lower, prob.upper, inner, outer, max_iter=k, lr=lr).grads
        errors.append(rel_err(torch.cat([g[0], g[1].reshape(1)]), torch.cat([target[0], target[1].reshape(1)])))
    assert all(b < a or b < 1e-12 for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] <= 1e-3, errors
    # the inner tensors are left untouched
    theta, _ = prob.theta_star(prob.s0, prob.l0)
    torch.testing.assert_close(inner[0].detach(), theta[:-1])


def test_an_undefined_upper_loss_counts_as_zero():
    """An upper loss that returns None (undefined, e.g. no multiplier meets the budget) gives zero
    gradients, a zero upper loss and upper_defined False, in every hypergradient variant."""
    prob = Ridge()
    inner, outer = prob.params()
    for res in (
        implicit.hypergradient(prob.lower, lambda i, o: None, inner, outer, max_iter=5),
        implicit.neumann(prob.lower, lambda i, o: None, inner, outer, max_iter=3, alpha=0.1),
        implicit.unrolled(prob.lower, lambda i, o: None, inner, outer, max_iter=2),
    ):
        assert not res.upper_defined and float(res.upper_loss) == 0.0
        assert all(not bool(g.any()) for g in res.grads)
    assert implicit.hypergradient(prob.lower, prob.upper, inner, outer, max_iter=5).upper_defined


def test_neumann_approaches_implicit():
    prob = Ridge()
    inner, outer = prob.params()
    target = implicit.hypergradient(prob.lower, prob.upper, inner, outer, tol=1e-12).grads
    lam_max = float(torch.linalg.eigvalsh(2 * prob.theta_star(prob.s0, prob.l0)[1]).max())
    errors, states = [], []
    for k in (0, 5, 20, 300):
        res = implicit.neumann(prob.lower, prob.upper, inner, outer, max_iter=k, alpha=1.0 / lam_max)
        states.append(res.state)
        errors.append(rel_err(res.grads[0], target[0]))
    assert all(b < a or b < 1e-12 for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] <= 1e-6, errors
    assert states[-1].error < states[1].error
    # one unrolled step from the minimiser equals the zero-product Neumann term (both are -lr M b)
    one = implicit.unrolled(prob.lower, prob.upper, inner, outer, max_iter=1, lr=0.01).grads
    zero = implicit.neumann(prob.lower, prob.upper, inner, outer, max_iter=0, alpha=0.01).grads
    torch.testing.assert_close(one[0], zero[0], rtol=1e-8, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    prob = Ridge()
    inner, outer = prob.params()
    with pytest.raises(ValueError, match="scalar loss"):
        implicit.hypergradient(
            lambda i, o: prob.lower(i, o) * torch.ones(2, dtype=torch.float64), prob.upper, inner, outer
        )
    with pytest.raises(ValueError, match="scalar loss"):
        implicit.hypergradient(prob.lower, lambda i, o: i[0], inner, outer)
    with pytest.raises(ValueError, match="require grad"):
        implicit.hypergradient(prob.lower, prob.upper, inner, [outer[0].detach(), outer[1]])
    with pytest.raises(ValueError, match="empty"):
        implicit.hypergradient(prob.lower, prob.upper, [], outer)
    with pytest.raises(ValueError, match="disjoint"):
        implicit.hypergradient(prob.lower, prob.upper, inner, [inner[0]])
    with pytest.raises(TypeError, match="float32"):
        implicit.hypergradient(prob.lower, prob.upper, [inner[0], inner[1].detach().float().requires_grad_()], outer)
    with pytest.raises(TypeError, match="callables"):
        implicit.hypergradient("loss", prob.upper, inner, outer)
    with pytest.raises(ValueError, match="max_iter"):
        implicit.hypergradient(prob.lower, prob.upper, inner, outer, max_iter=-1)
    with pytest.raises(ValueError, match="damping"):
        implicit.hypergradient(prob.lower, prob.upper, inner, outer, damping=float("nan"))
    with pytest.raises(ValueError, match="backend"):
        implicit.hypergradient(prob.lower, prob.upper, inner, outer, backend="fortran")
    with pytest.raises(ValueError, match="lr"):
        implicit.unrolled(prob.lower, prob.upper, inner, outer, lr=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        implicit.neumann(prob.lower, prob.upper, inner, outer, alpha=0.0)
    loss = prob.lower(inner, outer)
    with pytest.raises(ValueError, match="one tensor per parameter"):
        implicit.solve_hessian(loss, inner, [torch.zeros_like(inner[0])])
    with pytest.raises(ValueError, match=r"b\[0\] of shape"):
        implicit.solve_hessian(loss, inner, [torch.zeros(3, dtype=torch.float64), torch.zeros_like(inner[1])])
    a = random_spd(4, 0)
    with pytest.raises(ValueError, match="matvec output 0 of shape"):
        cg(lambda v: v[:2], torch.ones(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        cg(lambda v: v, torch.ones(4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"b\[1\]"):
        cg(lambda v: v, [torch.ones(4), torch.ones(2, dtype=torch.float64)])
    with pytest.raises(ValueError, match="check_every"):
        cg(lambda v: a @ v, torch.ones(4, dtype=torch.float64), check_every=0)
    with pytest.raises(ValueError, match="x0"):
        cg(lambda v: a @ v, torch.ones(4, dtype=torch.float64), x0=torch.ones(3, dtype=torch.float64))


@needs_ext
def test_compiled_driver_checks_inputs():
    params, loss_fn = mlp_problem()
    b = [torch.randn_like(p) for p in params]
    c = bidfcl._ops._C
    with pytest.raises(RuntimeError, match="one tensor per parameter"):
        c.hessian_cg(loss_fn(params), params, b[:2], None, 5, 1e-6, 0.0, 1, True)
    with pytest.raises(RuntimeError, match="scalar"):
        c.hessian_cg(loss_fn(params).reshape(1, 1), params, b, None, 5, 1e-6, 0.0, 1, True)
    with pytest.raises(RuntimeError, match="check_every"):
        c.hessian_cg(loss_fn(params), params, b, None, 5, 1e-6, 0.0, 0, True)
    with pytest.raises(RuntimeError, match="shape"):
        c.hessian_cg(loss_fn(params), params, [b[1]] + b[1:], None, 5, 1e-6, 0.0, 1, True)
    with pytest.raises(RuntimeError, match="damping"):
        c.hessian_cg(loss_fn(params), params, b, None, 5, 1e-6, -1.0, 1, True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hypergradient_under_no_grad_and_warm_start(backend):
    prob = Ridge()
    inner, outer = prob.params()
    ref = implicit.hypergradient(prob.lower, prob.upper, inner, outer, tol=1e-12, backend=backend)
    with torch.no_grad():
        res = implicit.hypergradient(prob.lower, prob.upper, inner, outer, tol=1e-12, backend=backend)
    for u, v in zip(res.grads, ref.grads):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-14)
    # warm start from the exact CG solution: nothing left to do
    theta, a = prob.theta_star(prob.s0, prob.l0)
    zv = prob.z(prob.xv)
    g = 2 * zv.T @ (zv @ theta - prob.yv) / prob.m
    v = torch.linalg.solve(2 * a, g)
    warm = implicit.hypergradient(prob.lower, prob.upper, inner, outer, tol=1e-8, x0=[v[:-1], v[-1]], backend=backend)
    assert warm.state.converged and warm.state.iter_num == 0
    torch.testing.assert_close(warm.grads[0], ref.grads[0], rtol=1e-7, atol=1e-12)


@needs_ext
@settings(max_examples=15, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(0, 4), min_size=0, max_size=3), min_size=1, max_size=4),
    seed=st.integers(0, 1000),
    every=st.integers(1, 5),
)
def test_property_cpp_equals_twin_on_random_quadratics(shapes, seed, every):
    # L = 0.5 t'At + sum cos(t) with t the concatenated parameters (mixed shapes, empty blocks allowed)
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]
    n = sum(p.numel() for p in params)
    a = random_spd(max(n, 1), seed)[:n, :n] * 3.0
    b = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]

    def loss():
        t = torch.cat([p.reshape(-1) for p in params])
        return 0.5 * t @ a @ t + torch.cos(t).sum() + 0.0 * sum(p.sum() for p in params)

    rc = implicit.solve_hessian(loss(), params, b, max_iter=n + 2, tol=1e-10, check_every=every, backend="cpp")
    rp = implicit.solve_hessian(loss(), params, b, max_iter=n + 2, tol=1e-10, check_every=1, backend="python")
    assert (rc.state.iter_num, rc.state.status) == (rp.state.iter_num, rp.state.status)
    for u, v, p in zip(rc.solution, rp.solution, params):
        assert u.shape == p.shape
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-13)


@needs_ext
def test_compiled_driver_checks_x0():
    params, loss_fn = mlp_problem()
    b = [torch.randn_like(p) for p in params]
    with pytest.raises(RuntimeError, match="x0 to have one tensor per parameter"):
        bidfcl._ops._C.hessian_cg(loss_fn(params), params, b, b[:1], 5, 1e-6, 0.0, 1, True)
    with pytest.raises(RuntimeError, match=r"x0\[0\]"):
        bidfcl._ops._C.hessian_cg(loss_fn(params), params, b, [t.float() for t in b], 5, 1e-6, 0.0, 1, True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_and_empty_blocks(backend):
    a = random_spd(12, seed=9)
    b_t = torch.randn(4, 3, dtype=torch.float64).T  # non-contiguous (3, 4)
    empty = torch.zeros(0, 2, dtype=torch.float64)

    def matvec(blocks):
        y = a @ blocks[0].reshape(-1)
        return [y.reshape(3, 4), torch.zeros_like(blocks[1])]

    x, state = cg(matvec, [b_t, empty], max_iter=50, tol=1e-12)
    assert state.converged and x[1].shape == (0, 2)
    torch.testing.assert_close(x[0].reshape(-1), torch.linalg.solve(a, b_t.reshape(-1)))
    # Hessian solve with a non-contiguous parameter and an empty one
    w = torch.randn(4, 3, dtype=torch.float64).T.requires_grad_()
    e = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    loss = 0.5 * w.reshape(-1) @ a @ w.reshape(-1) + (e**2).sum()
    res = implicit.solve_hessian(loss, [w, e], [b_t, torch.zeros(0, dtype=torch.float64)], tol=1e-12, backend=backend)
    assert res.state.converged and res.solution[1].shape == (0,)
    torch.testing.assert_close(res.solution[0].reshape(-1), torch.linalg.solve(a, b_t.reshape(-1)))


# ----------------------------------------------------------------------------- Gauss-Newton curvature
def _weighted_ls_problem(nonlinear: bool, seed: int = 0):
    """Lower: weighted least squares of outputs o(theta) = tanh?(X A) w towards y with weights
    sigmoid(X phi); upper: a quadratic of theta. Returns (CompositeLoss, upper, theta, phi)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.randn(40, 2, generator=g, dtype=torch.float64)
    theta = [torch.randn(3, 2, generator=g, dtype=torch.float64).requires_grad_(True)]
    phi = [torch.randn(3, 2, generator=g, dtype=torch.float64).mul_(0.3).requires_grad_(True)]
    target = torch.randn(3, 2, generator=g, dtype=torch.float64)

    def outputs(inner):
        o = x @ inner[0]
        return torch.tanh(o) if nonlinear else o

    def loss(o, outer):
        return (torch.sigmoid(x @ outer[0]) * (o - y) ** 2).sum(1).mean()

    def upper(inner, outer):
        return ((inner[0] - target) ** 2).sum()

    return implicit.CompositeLoss(outputs, loss), upper, theta, phi


def test_gauss_newton_equals_hessian_when_outputs_are_linear():
    lower, upper, theta, phi = _weighted_ls_problem(nonlinear=False)
    exact = implicit.hypergradient(lower, upper, theta, phi, max_iter=100, tol=1e-12)
    gn = implicit.hypergradient(lower, upper, theta, phi, max_iter=100, tol=1e-12, curvature="gauss-newton")
    torch.testing.assert_close(gn.grads[0], exact.grads[0], rtol=1e-8, atol=1e-12)
    assert float(exact.grads[0].abs().max()) > 1e-3
    # the composite evaluates the composed loss wherever a lower_loss callable is expected
    torch.testing.assert_close(lower(theta, phi), lower.loss(lower.outputs(theta), phi))


def test_gauss_newton_is_psd_and_matches_dense_formula_for_nonlinear_outputs():
    """G = J' diag(2 W / N) J for the weighted squared error: the hypergradient equals the dense
    formula with G in place of H, and CG never meets negative curvature."""
    lower, upper, theta, phi = _weighted_ls_problem(nonlinear=True, seed=3)
    damping = 1e-3
    res = implicit.hypergradient(
        lower, upper, theta, phi, max_iter=200, tol=1e-13, damping=damping, curvature="gauss-newton"
    )
    assert res.state.status == "converged"
    th = theta[0].detach()
    jac = torch.autograd.functional.jacobian(lambda t: lower.outputs([t]), th).reshape(80, 6)
    o = lower.outputs([th]).detach().requires_grad_(True)
    h_o = torch.autograd.functional.hessian(lambda u: lower.loss(u, [phi[0].detach()]), o).reshape(80, 80)
    G = jac.T @ h_o @ jac + damping * torch.eye(6, dtype=torch.float64)
    assert float(torch.linalg.eigvalsh(G).min()) > 0
    b = torch.autograd.functional.jacobian(lambda t: upper([t], phi), th).reshape(6)
    v = torch.linalg.solve(G, b)
    mixed = torch.autograd.functional.jacobian(
        lambda p: torch.autograd.functional.jacobian(lambda t: lower([t], [p]), th, create_graph=True).reshape(6) @ v,
        phi[0].detach(),
    )
    torch.testing.assert_close(res.grads[0], -mixed, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(res.solution[0].reshape(6), v, rtol=1e-7, atol=1e-10)


def test_gauss_newton_hypergradient_is_the_derivative_of_the_linearised_lower_problem():
    """Gauss-Newton with damping mu is the exact implicit hypergradient of the lower problem whose
    outputs are linearised at theta0, o(theta0) + J (theta - theta0), plus the ridge mu/2 ||theta||^2:
    at its stationary point theta0 (the ridge problem's solution, Newton-polished) the hypergradient
    matches central finite differences of L_up(theta_lin*(phi)), the quadratic lower problem solved
    exactly at each perturbed phi. The exact Hessian does not (its residual term is left out)."""
    lower, upper, theta, phi = _weighted_ls_problem(nonlinear=True, seed=3)
    mu = 1e-2
    th, ph = theta[0].detach().reshape(-1), phi[0].detach()

    def ridge(t, p):
        return lower([t.view(3, 2)], [p]) + 0.5 * mu * (t**2).sum()

    def newton(f, t):
        for _ in range(50):
            g = torch.autograd.functional.jacobian(f, t)
            if float(g.norm()) < 1e-13:
                break
            t = t - torch.linalg.solve(torch.autograd.functional.hessian(f, t), g)
        return t

    theta0 = newton(lambda t: ridge(t, ph), th)
    assert float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(lambda t: ridge(t, ph), theta0)).min()) > 0
    o0 = lower.outputs([theta0.view(3, 2)]).detach()
    jac = torch.autograd.functional.jacobian(lambda t: lower.outputs([t.view(3, 2)]), theta0).reshape(-1, 6)

    def lin_upper(p):  # L_up at the minimiser of the linearised ridge problem at phi = p
        lin = lambda t: lower.loss(o0 + (jac @ (t - theta0)).view_as(o0), [p]) + 0.5 * mu * (t**2).sum()  # noqa: E731
        return float(upper([newton(lin, theta0).view(3, 2)], [p]))

    h = 1e-5
    fd = torch.zeros(6, dtype=torch.float64)
    for k in range(6):
        e = torch.zeros(6, dtype=torch.float64)
        e[k] = h
        fd[k] = (lin_upper(ph + e.view(3, 2)) - lin_upper(ph - e.view(3, 2))) / (2 * h)
    at = [theta0.view(3, 2).clone().requires_grad_(True)]
    gn = implicit.hypergradient(lower, upper, at, phi, max_iter=200, tol=1e-13, damping=mu, curvature="gauss-newton")
    assert gn.state.status == "converged" and float(fd.norm()) > 1e-3
    torch.testing.assert_close(gn.grads[0].reshape(-1), fd, rtol=1e-5, atol=1e-8)
    exact = implicit.hypergradient(lower, upper, at, phi, max_iter=200, tol=1e-13, damping=mu, curvature="hessian")
    assert float((exact.grads[0].reshape(-1) - fd).norm()) > 1e-2 * float(fd.norm())


def test_hypergradient_returns_its_solution_as_warm_start():
    lower, upper, theta, phi = _weighted_ls_problem(nonlinear=False, seed=1)  # positive definite H
    for curvature in ("hessian", "gauss-newton"):
        cold = implicit.hypergradient(
            lower, upper, theta, phi, max_iter=200, tol=1e-10, damping=1e-2, curvature=curvature
        )
        warm = implicit.hypergradient(
            lower, upper, theta, phi, max_iter=200, tol=1e-10, damping=1e-2, curvature=curvature, x0=cold.solution
        )
        assert warm.state.iter_num < cold.state.iter_num
        torch.testing.assert_close(warm.grads[0], cold.grads[0], rtol=1e-6, atol=1e-9)


def test_gauss_newton_needs_a_composite_loss_and_a_known_curvature():
    lower, upper, theta, phi = _weighted_ls_problem(nonlinear=False)
    with pytest.raises(TypeError, match="CompositeLoss"):
        implicit.hypergradient(lambda i, o: lower(i, o), upper, theta, phi, curvature="gauss-newton")
    with pytest.raises(ValueError, match="curvature"):
        implicit.hypergradient(lower, upper, theta, phi, curvature="newton")
    with pytest.raises(TypeError, match="two callables"):
        implicit.CompositeLoss(None, lambda o, p: o.sum())


def test_auto_curvature_is_the_hessian_where_positive_definite_else_gauss_newton():
    lower, upper, theta, phi = _weighted_ls_problem(nonlinear=False)  # positive definite H
    auto = implicit.hypergradient(lower, upper, theta, phi, max_iter=100, tol=1e-12, curvature="auto")
    exact = implicit.hypergradient(lower, upper, theta, phi, max_iter=100, tol=1e-12)
    assert auto.state.status == "converged"
    torch.testing.assert_close(auto.grads[0], exact.grads[0], rtol=0, atol=0)
    lower, upper, theta, phi = _weighted_ls_problem(nonlinear=True, seed=1)  # indefinite here
    hess = implicit.hypergradient(lower, upper, theta, phi, max_iter=50, damping=1e-2)
    assert hess.state.status == "nonpositive_curvature"
    auto = implicit.hypergradient(lower, upper, theta, phi, max_iter=50, damping=1e-2, curvature="auto")
    gn = implicit.hypergradient(lower, upper, theta, phi, max_iter=50, damping=1e-2, curvature="gauss-newton")
    assert auto.state.status == "nonpositive_curvature" and gn.state.status != "nonpositive_curvature"
    torch.testing.assert_close(auto.grads[0], gn.grads[0], rtol=0, atol=0)
    with pytest.raises(TypeError, match="CompositeLoss"):
        implicit.hypergradient(lambda i, o: lower(i, o), upper, theta, phi, curvature="auto")
