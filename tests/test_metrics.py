"""Decision metrics (METHOD.md section 2): IPW/Hajek policy value, EOM, AUCC, Qini/AUUC."""

from __future__ import annotations

import pytest
import torch

import bidfcl
from bidfcl import _reference as ref
from bidfcl import metrics
from bidfcl._ops import ops
from conftest import DTYPES, F64, needs_cuda, needs_ext

# --------------------------------------------------------------------------------------------------
# policy value
# --------------------------------------------------------------------------------------------------


def rct_sample(n, m, seed, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, m, (n,), generator=g)
    rev = (torch.rand(n, generator=g, dtype=F64) * 3).to(dtype)
    cost = torch.rand(n, generator=g, dtype=F64).to(dtype)
    choice = torch.randint(0, m, (3, n), generator=g)
    prop = (torch.bincount(t, minlength=m).to(F64) / n)[t].to(dtype)
    return choice, t, rev, cost, prop


@pytest.mark.parametrize("hajek", [False, True])
def test_policy_value_matches_twin_and_definition(hajek):
    choice, t, rev, cost, prop = rct_sample(500, 3, 0)
    got = ops.policy_value(choice, t, rev, cost, prop, hajek)
    exp = ref.policy_value(choice, t, rev, cost, prop, hajek)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    # the definition, written out for policy 0
    match = (choice[0] == t).to(F64)
    y = match * rev / prop
    if hajek:
        w = (match / prop).sum()
        v = y.sum() / w
        se = torch.sqrt(500 / 499 * ((match / prop) ** 2 * (rev - v) ** 2).sum()) / w
    else:
        v = y.mean()
        se = y.std() / 500**0.5
    torch.testing.assert_close(got[0][0], v)
    torch.testing.assert_close(got[2][0], se)


def test_policy_value_api_shapes_and_propensity_forms():
    choice, t, rev, cost, prop = rct_sample(300, 3, 1)
    one = metrics.policy_value(choice[0], t, rev, cost)
    assert all(x.shape == () and x.dtype == F64 for x in one)
    many = metrics.policy_value(choice, t, rev, cost)
    torch.testing.assert_close(many.value[0], one.value)
    per_arm = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    torch.testing.assert_close(
        metrics.policy_value(choice, t, rev, cost, per_arm).value,
        metrics.policy_value(choice, t, rev, cost, per_arm[t]).value,
    )
    with pytest.raises(ValueError, match="normalize must be"):
        metrics.policy_value(choice, t, rev, cost, normalize="snips")


@pytest.mark.parametrize("normalize", ["ipw", "hajek"])
def test_policy_value_unbiased_with_calibrated_standard_error(normalize):
    """500 RCT draws over users with known expected outcomes: the estimates centre on the truth and
    the reported standard error matches their spread."""
    g = torch.Generator().manual_seed(7)
    n, m, draws = 2000, 3, 500
    mu_rev = torch.rand(n, m, generator=g, dtype=F64) * torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    mu_cost = torch.rand(n, m, generator=g, dtype=F64) * torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    choice = torch.randint(0, m, (n,), generator=g)
    truth_rev = float(mu_rev[torch.arange(n), choice].mean())
    truth_cost = float(mu_cost[torch.arange(n), choice].mean())
    p_arm = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    values, costs, ses, cost_ses = [], [], [], []
    for _ in range(draws):
        t = torch.multinomial(p_arm, n, replacement=True, generator=g)
        rows = torch.arange(n)
        rev = torch.poisson(mu_rev[rows, t], generator=g)  # noisy outcomes with the known means
        cost = mu_cost[rows, t] * (0.5 + torch.rand(n, generator=g, dtype=F64))
        pv = metrics.policy_value(choice, t, rev, cost, p_arm, normalize=normalize)
        values.append(float(pv.value))
        costs.append(float(pv.cost))
        ses.append(float(pv.value_se))
        cost_ses.append(float(pv.cost_se))
    values, costs = torch.tensor(values), torch.tensor(costs)
    for est, se, truth in ((values, ses, truth_rev), (costs, cost_ses, truth_cost)):
        spread = float(est.std())
        assert abs(float(est.mean()) - truth) < 3 * spread / draws**0.5
        assert abs(sum(se) / draws / spread - 1) < 0.2


# --------------------------------------------------------------------------------------------------
# EOM
# --------------------------------------------------------------------------------------------------


def test_eom_is_policy_value_of_rct_solve_and_curve_batches_budgets():
    g = torch.Generator().manual_seed(3)
    n, m = 400, 3
    r_hat = torch.rand(n, m, generator=g, dtype=F64) * torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    c_hat = torch.rand(n, m, generator=g, dtype=F64) * torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    t = torch.randint(0, m, (n,), generator=g)
    rev = torch.rand(n, generator=g, dtype=F64) * 3
    cost = c_hat[torch.arange(n), t] * (0.5 + torch.rand(n, generator=g, dtype=F64))
    budgets = torch.tensor([0.1, 0.3, 0.6], dtype=F64)
    curve = metrics.eom_curve(r_hat, c_hat, t, rev, cost, budgets)
    assert curve.value.shape == (3,)
    for k, b in enumerate(budgets.tolist()):
        one = metrics.eom(r_hat, c_hat, t, rev, cost, b)
        sol = bidfcl.solve_mckp_rct(r_hat, c_hat, t, cost, b)
        pv = metrics.policy_value(sol.choice, t, rev, cost)
        torch.testing.assert_close(one.value, pv.value)
        torch.testing.assert_close(one.value_se, pv.value_se)
        torch.testing.assert_close(curve.value[k], one.value)
        torch.testing.assert_close(curve.lam[k], sol.lam)
        assert float(one.cost) <= b + 1e-12  # the RCT-calibrated spend meets the budget
    assert bool((curve.value[1:] >= curve.value[:-1] - 0.2).all())


# --------------------------------------------------------------------------------------------------
# AUCC
# --------------------------------------------------------------------------------------------------


def slow_aucc(r_hat, c_hat, treatment, revenue, cost, q):
    """AUCC straight from its definition, one row and one level at a time."""
    n = r_hat.shape[0]
    roi = []
    for i in range(n):
        dc = max(float(c_hat[i, 1] - c_hat[i, 0]), 1e-12)
        roi.append(float(r_hat[i, 1] - r_hat[i, 0]) / dc)
    order = sorted(range(n), key=lambda i: (-roi[i], i))
    n1 = sum(int(x) for x in treatment)
    n0 = n - n1
    cum_c, cum_r = [0.0], [0.0]
    for i in order:
        sign, size = (1.0, n1) if int(treatment[i]) == 1 else (-1.0, n0)
        cum_c.append(cum_c[-1] + sign * float(cost[i]) / size)
        cum_r.append(cum_r[-1] + sign * float(revenue[i]) / size)
    total_c, total_r = cum_c[-1], cum_r[-1]
    points = []
    for qq in range(q + 1):
        level = total_c * qq / q
        running_max, k = 0.0, 0
        for k in range(n + 1):
            running_max = max(running_max, cum_c[k])
            if running_max >= level:
                break
        points.append(cum_r[k])
    return sum(points) / (total_r * (q + 1))


def test_aucc_hand_computed_tiny_case():
    # ranking 0, 1, 2, 3 (ROI 4, 3, 2, 1); n1 = n0 = 2
    r_hat = torch.tensor([[0.0, 4.0], [0.0, 3.0], [0.0, 2.0], [0.0, 1.0]], dtype=F64)
    c_hat = torch.tensor([[0.0, 1.0]] * 4, dtype=F64)
    t = torch.tensor([1, 0, 1, 0])
    rev = torch.tensor([4.0, 1.0, 2.0, 1.0], dtype=F64)
    cost = torch.tensor([2.0, 1.0, 2.0, 1.0], dtype=F64)
    # C(k) = 0, 1, 0.5, 1.5, 1.0 and R(k) = 0, 2, 1.5, 2.5, 2.0; running max of C: 0, 1, 1, 1.5, 1.5
    # q = 2: levels 0, 0.5, 1.0 -> k = 0, 1, 1 -> R = 0, 2, 2 -> AUCC = 4 / (2 * 3)
    res = metrics.aucc_curve(r_hat, c_hat, t, rev, cost, q=2)
    torch.testing.assert_close(res.aucc, torch.tensor(4 / 6, dtype=F64))
    torch.testing.assert_close(res.cost_curve, torch.tensor([0.0, 1.0, 1.0], dtype=F64))
    torch.testing.assert_close(res.revenue_curve, torch.tensor([0.0, 2.0, 2.0], dtype=F64))
    # q = 4: levels 0, .25, .5, .75, 1 -> k = 0, 1, 1, 1, 1 -> 8 / (2 * 5)
    torch.testing.assert_close(metrics.aucc(r_hat, c_hat, t, rev, cost, q=4), torch.tensor(0.8, dtype=F64))
    assert abs(slow_aucc(r_hat, c_hat, t, rev, cost, 2) - 4 / 6) < 1e-15


def simulated_binary(n, seed, dtype=F64):
    """Two options with known per-user incremental revenue and cost; noisy RCT outcomes."""
    g = torch.Generator().manual_seed(seed)
    base_r = torch.rand(n, generator=g, dtype=F64)
    base_c = 0.1 * torch.rand(n, generator=g, dtype=F64)
    lift_c = 0.2 + torch.rand(n, generator=g, dtype=F64)
    roi = torch.rand(n, generator=g, dtype=F64) * 3
    lift_r = roi * lift_c
    t = torch.randint(0, 2, (n,), generator=g)
    mean_r = base_r + t * lift_r
    mean_c = base_c + t * lift_c
    rev = mean_r + 0.3 * torch.randn(n, generator=g, dtype=F64)
    cost = mean_c * (0.8 + 0.4 * torch.rand(n, generator=g, dtype=F64))
    r_true = torch.stack([base_r, base_r + lift_r], 1).to(dtype)
    c_true = torch.stack([base_c, base_c + lift_c], 1).to(dtype)
    return r_true, c_true, t, rev.to(dtype), cost.to(dtype), lift_r, lift_c


@pytest.mark.parametrize("ties", [False, True])
def test_aucc_matches_slow_reference_and_twin(ties):
    r_hat, c_hat, t, rev, cost, _, _ = simulated_binary(300, 11)
    if ties:  # many equal ROIs: ties are broken by row index
        r_hat = torch.stack([torch.zeros(300, dtype=F64), torch.randint(0, 4, (300,)).to(F64)], 1)
        c_hat = torch.tensor([[0.0, 1.0]], dtype=F64).expand(300, 2)
    for q in (1, 7, 200):
        expected = slow_aucc(r_hat, c_hat, t, rev, cost, q)
        got = ops.aucc(r_hat, c_hat, t, rev, cost, q)
        assert abs(float(got[0]) - expected) < 1e-12
        for a, b in zip(got, ref.aucc(r_hat, c_hat, t, rev, cost, q)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_aucc_random_half_perfect_maximum():
    n = 200_000
    r_true, c_true, t, rev, cost, lift_r, lift_c = simulated_binary(n, 12)
    g = torch.Generator().manual_seed(13)
    perfect = float(metrics.aucc(r_true, c_true, t, rev, cost))
    random_scores = torch.rand(n, 2, generator=g, dtype=F64)
    random = float(metrics.aucc(random_scores, torch.zeros_like(random_scores), t, rev, cost))
    noisy_r = r_true + 0.5 * torch.randn(n, 2, generator=g, dtype=F64)
    noisy = float(metrics.aucc(noisy_r, c_true, t, rev, cost))
    reverse = float(metrics.aucc(-r_true, -c_true, t, rev, cost))
    # the best any ranking can do in expectation: the oracle curve of the true effects
    order = torch.argsort(lift_r / lift_c, descending=True)
    exp_c = torch.cat([torch.zeros(1, dtype=F64), torch.cumsum(lift_c[order], 0)]) / n
    exp_r = torch.cat([torch.zeros(1, dtype=F64), torch.cumsum(lift_r[order], 0)]) / n
    levels = exp_c[-1] * torch.arange(201, dtype=F64) / 200
    oracle = float(exp_r[torch.searchsorted(exp_c, levels)].sum() / (exp_r[-1] * 201))
    assert abs(random - 0.5) < 0.03
    assert abs(perfect - oracle) < 0.02
    assert perfect > noisy > random > reverse


def test_aucc_float32_and_errors():
    r_hat, c_hat, t, rev, cost, _, _ = simulated_binary(1000, 14)
    a64 = float(metrics.aucc(r_hat, c_hat, t, rev, cost))
    a32 = float(metrics.aucc(r_hat.float(), c_hat.float(), t, rev.float(), cost.float()))
    assert abs(a32 - a64) < 1e-3
    with pytest.raises(RuntimeError, match="exactly two options"):
        metrics.aucc(torch.zeros(4, 3, dtype=F64), torch.zeros(4, 3, dtype=F64), t[:4], rev[:4], cost[:4])
    bad = t.clone()
    bad[5] = 2
    with pytest.raises(RuntimeError, match=r"treatment must be in \[0, M\) = \[0, 2\), got 2 at row 5"):
        metrics.aucc(r_hat, c_hat, bad, rev, cost)
    with pytest.raises(RuntimeError, match="needs rows in both arms"):
        metrics.aucc(r_hat, c_hat, torch.ones_like(t), rev, cost)
    nan_rev = rev.clone()
    nan_rev[3] = float("nan")
    with pytest.raises(RuntimeError, match="revenue must be finite, got nan at row 3"):
        metrics.aucc(r_hat, c_hat, t, nan_rev, cost)
    with pytest.raises(RuntimeError, match="revenue must have shape"):
        metrics.aucc(r_hat, c_hat, t, rev[:-1], cost)
    with pytest.raises(RuntimeError, match="q must be >= 1"):
        metrics.aucc(r_hat, c_hat, t, rev, cost, q=0)
    empty = torch.zeros(0, 2, dtype=F64)
    res = metrics.aucc_curve(
        empty, empty, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=F64), torch.zeros(0, dtype=F64), q=4
    )
    assert torch.isnan(res.aucc) and res.cost_curve.shape == (5,)


def test_policy_value_errors_and_empty():
    choice, t, rev, cost, prop = rct_sample(50, 3, 2)
    bad = prop.clone()
    bad[4] = 0.0
    with pytest.raises(RuntimeError, match=r"propensity must be in \(0, 1\], got 0(\.0)? at row 4"):
        ops.policy_value(choice, t, rev, cost, bad, False)
    with pytest.raises(RuntimeError, match="cost must have shape"):
        ops.policy_value(choice, t, rev, cost[:-1], prop, False)
    nan = rev.clone()
    nan[9] = float("nan")
    with pytest.raises(RuntimeError, match="revenue must be finite, got nan at row 9"):
        ops.policy_value(choice, t, nan, cost, prop, False)
    empty = metrics.policy_value(
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=F64),
        torch.zeros(0, dtype=F64),
    )
    assert torch.isnan(empty.value) and torch.isnan(empty.value_se)


def test_non_contiguous_metrics_inputs():
    r_hat, c_hat, t, rev, cost, _, _ = simulated_binary(500, 15)
    r_nc = r_hat.t().contiguous().t()
    rev_nc = torch.stack([rev, rev], 1)[:, 1]
    assert not r_nc.is_contiguous() and not rev_nc.is_contiguous()
    assert float(metrics.aucc(r_nc, c_hat, t, rev_nc, cost)) == float(metrics.aucc(r_hat, c_hat, t, rev, cost))
    choice = torch.stack([t, 1 - t], 1)[:, 1]
    assert not choice.is_contiguous()
    a = metrics.policy_value(choice, t, rev_nc, cost)
    b = metrics.policy_value(choice.contiguous(), t, rev, cost)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@needs_ext
def test_metrics_opcheck():
    choice, t, rev, cost, prop = rct_sample(64, 3, 4)
    torch.library.opcheck(torch.ops.bidfcl.policy_value, (choice, t, rev, cost, prop, False))
    torch.library.opcheck(torch.ops.bidfcl.policy_value, (choice, t, rev, cost, prop, True))
    r_hat, c_hat, t2, rev2, cost2, _, _ = simulated_binary(64, 16)
    torch.library.opcheck(torch.ops.bidfcl.aucc, (r_hat, c_hat, t2, rev2, cost2, 10))


@needs_ext
def test_metrics_same_result_with_one_and_two_threads():
    r_hat, c_hat, t, rev, cost, _, _ = simulated_binary(300_000, 17)
    choice = torch.randint(0, 2, (2, 300_000))
    prop = torch.full((300_000,), 0.5, dtype=F64)
    before = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out.append(
                [*ops.aucc(r_hat, c_hat, t, rev, cost, 200), *ops.policy_value(choice, t, rev, cost, prop, False)]
            )
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*out))


# --------------------------------------------------------------------------------------------------
# Qini / AUUC
# --------------------------------------------------------------------------------------------------


def test_qini_and_auuc():
    n = 100_000
    g = torch.Generator().manual_seed(21)
    uplift = torch.rand(n, generator=g, dtype=F64)
    t = torch.randint(0, 2, (n,), generator=g)
    y = (torch.rand(n, generator=g, dtype=F64) < 0.2 + 0.5 * uplift * t).to(F64)
    random = torch.rand(n, generator=g, dtype=F64)
    for fn in (metrics.qini, metrics.auuc):
        perfect, rnd = float(fn(uplift, t, y)), float(fn(random, t, y))
        assert abs(rnd - 0.5) < 0.05
        assert perfect > 0.6
        assert float(fn(-uplift, t, y)) < 0.4
    # tiny hand case: ranking 0..3, treated at 0 and 2 (y = 1, 0), control at 1 and 3 (y = 0, 1)
    s = torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=F64)
    tt = torch.tensor([1, 0, 1, 0])
    yy = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=F64)
    # q = 4: k = 0..4. Q(k) = 0, 1, 1, 1, 0 -> Q(N) = 0: undefined area (nan)
    assert torch.isnan(metrics.qini(s, tt, yy, q=4))
    yy = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=F64)
    # Q(k) = 0, 1, 1, 2, 2 -> (0+1+1+2+2) / (2 * 5) = 0.6
    torch.testing.assert_close(metrics.qini(s, tt, yy, q=4), torch.tensor(0.6, dtype=F64))
    # U(k) = 0, 0, (1/1 - 0/1) * 2 = 2, (2/2 - 0) * 3 = 3, (1 - 0) * 4 = 4 -> 9 / (4 * 5)
    torch.testing.assert_close(metrics.auuc(s, tt, yy, q=4), torch.tensor(9 / 20, dtype=F64))


# --------------------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_metrics_match_cpu(dtype):
    r_hat, c_hat, t, rev, cost, _, _ = simulated_binary(20_000, 30, dtype)
    choice = torch.randint(0, 2, (3, 20_000))
    prop = torch.full((20_000,), 0.5, dtype=dtype)
    for hajek in (False, True):
        cpu = ops.policy_value(choice, t, rev, cost, prop, hajek)
        gpu = ops.policy_value(choice.cuda(), t.cuda(), rev.cuda(), cost.cuda(), prop.cuda(), hajek)
        for a, b in zip(gpu, cpu):
            torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-12)
    cpu = ops.aucc(r_hat, c_hat, t, rev, cost, 200)
    gpu = ops.aucc(r_hat.cuda(), c_hat.cuda(), t.cuda(), rev.cuda(), cost.cuda(), 200)
    for a, b in zip(gpu, cpu):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-12)
