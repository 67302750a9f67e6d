"""The exact solve's vector kernels and bracketed paths (cpp/core/cpu/mckp_settle.cpp, mckp_bracket.cpp).

Above 32,768 users the exact solve settles most users with a per-row test on AVX2 vectors
(float32 and float64; M < W packs W / M rows per vector, M >= W spreads a row over M / W vectors;
other M use the portable kernels) and builds hulls only for the rest; several budgets share one
bracket when their lam* lie close together. None of this may change an answer: every test here
compares with the pure-PyTorch twin, with single-budget calls, or with the portable kernels
(``BIDFCL_DISABLE_AVX2=1`` in a fresh process).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import bidfcl
from bidfcl import _reference as ref
from bidfcl._ops import ops
from conftest import DTYPES, F64, needs_ext, random_mckp

N_BRACKET = 40_001  # above the bracketed path's threshold; odd, so no vector width divides it


def _frontier_budgets(v, c, exact_points=False):
    """Budgets between frontier points, or (exact_points) equal to them: lam* is then a tie."""
    spend = ref.budget_frontier(v, c)[1]
    out = []
    for q in (0.03, 0.3, 0.7):
        k = int(q * (len(spend) - 1))
        out.append(float(spend[k]) if exact_points else 0.5 * (float(spend[k]) + float(spend[k + 1])))
    return torch.tensor(out, dtype=F64)


def _same(a, b, totals_rtol=1e-12):
    lam_a, choice_a, spend_a, value_a, dual_a, feas_a = a
    lam_b, choice_b, spend_b, value_b, dual_b, feas_b = b
    assert torch.equal(feas_a, feas_b)
    assert torch.equal(lam_a, lam_b)
    assert torch.equal(choice_a, choice_b)
    torch.testing.assert_close(spend_a, spend_b, rtol=totals_rtol, atol=1e-9)
    torch.testing.assert_close(value_a, value_b, rtol=totals_rtol, atol=1e-9)
    torch.testing.assert_close(dual_a, dual_b, rtol=1e-10, atol=1e-7)


# --------------------------------------------------------------------------------------------------
# every dtype x M specialisation against the twin, one budget at a time (the bracketed path)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 4, 8, 16, 3, 12])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["rand", "ties", "dup"])
def test_bracketed_kernels_match_twin(m, dtype, kind):
    v, c = random_mckp(N_BRACKET, m, 31 + m, dtype=dtype, kind=kind)
    for b in _frontier_budgets(v, c, exact_points=kind != "rand").tolist():
        one = torch.tensor([b], dtype=F64)
        _same(ops.solve_mckp(v, c, one), ref.solve_mckp(v, c, one))


@pytest.mark.parametrize("n", [1, 2, 7, 32_768, 32_769, 32_775])
@pytest.mark.parametrize("m", [2, 16])
def test_sizes_around_the_thresholds(n, m):
    """N = 1 (no vector), N at the bracketed path's threshold, and N leaving 1..7 rows after the
    last full vector of a chunk."""
    v, c = random_mckp(n, m, n + m, dtype=torch.float32)
    top = float(c.max(1).values.double().sum())
    budgets = torch.tensor([0.0, 0.2 * top, 0.6 * top, 2 * top + 1], dtype=F64)
    for b in budgets.tolist():
        one = torch.tensor([b], dtype=F64)
        _same(ops.solve_mckp(v, c, one), ref.solve_mckp(v, c, one))


def test_no_users_is_rejected():
    v, c = random_mckp(0, 4, 0)
    with pytest.raises(RuntimeError, match="at least one individual"):
        bidfcl.solve_mckp(v, c, 1.0)


def test_zero_costs_and_equal_values_everywhere():
    """Rows whose options all cost 0 or are all worth the same settle with the lowest index."""
    n, m = N_BRACKET, 8
    v, c = random_mckp(n, m, 5, dtype=torch.float32)
    v[::3] = 1.0  # every option worth the same: the cheapest, lowest index wins
    c[1::3] = 0.0  # every option free: the most valuable, lowest index wins
    b = float(c.double().sum() * 0.1)
    sol = bidfcl.solve_mckp(v, c, b)
    rows = torch.arange(1, n, 3)
    assert torch.equal(sol.choice[1::3], v[rows].argmax(1))
    _same(ops.solve_mckp(v, c, torch.tensor([b], dtype=F64)), ref.solve_mckp(v, c, torch.tensor([b], dtype=F64)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_large_inputs(dtype):
    v, c = random_mckp(N_BRACKET, 8, 3, dtype=dtype)
    b = torch.tensor([float(c.double().sum() * 0.05)], dtype=F64)
    want = ops.solve_mckp(v, c, b)
    strided = (torch.stack([v, v], 2)[:, :, 0], torch.stack([c, c], 2)[:, :, 0])  # every other element
    transposed = (v.t().contiguous().t(), c.t().contiguous().t())  # column-major
    for vt, ct in (strided, transposed):
        assert not vt.is_contiguous() and torch.equal(vt, v)
        _same(ops.solve_mckp(vt, ct, b), want)


# --------------------------------------------------------------------------------------------------
# bad input: the same messages, the first bad entry in row-major order
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 8, 16, 5])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "field,bad,match",
    [
        ("values", float("nan"), r"values must be finite, got nan at \[{row}, {col}\]"),
        ("values", float("-inf"), r"values must be finite, got -inf at \[{row}, {col}\]"),
        ("values", float("inf"), r"values must be finite, got inf at \[{row}, {col}\]"),
        ("costs", float("inf"), r"costs must be finite, got inf at \[{row}, {col}\]"),
        ("costs", -0.5, r"costs must be >= 0, got -0.5 at \[{row}, {col}\]"),
    ],
)
def test_bad_entries_reported_at_their_position(m, dtype, field, bad, match):
    """A settled-looking row (-inf value, negative cost) is caught as surely as a NaN; with two bad
    entries the first in row-major order is named; rows in the sample, inside a vector and in the
    rows after the last full vector all report the same way."""
    v, c = random_mckp(N_BRACKET, m, 9, dtype=dtype)
    b = float(c.double().sum() * 0.1)
    for row in (20_001, 64, 13_333):  # inside a vector, a sample row, a row after the last full vector
        col = m - 1
        vv, cc = v.clone(), c.clone()
        (vv if field == "values" else cc)[row, col] = bad
        (vv if field == "values" else cc)[row + 1 if row + 1 < N_BRACKET else row, 0] = bad  # a later one
        with pytest.raises(RuntimeError, match=match.format(row=row, col=col)):
            bidfcl.solve_mckp(vv, cc, b)


# --------------------------------------------------------------------------------------------------
# several budgets: one bracket spanning them, against single calls and the twin
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 8, 16])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [0.0, 0.01, 0.08, 0.28])
def test_budget_batch_matches_single_calls_and_twin(m, dtype, width):
    """Budgets clustered around 30% of the spend range (the spanning bracket) and spread wide (the
    full algorithm): the same lam and choices as one call per budget and as the twin."""
    v, c = random_mckp(N_BRACKET, m, 17 + m, dtype=dtype)
    low, high = float(c.min(1).values.double().sum()), float(c.max(1).values.double().sum())
    fr = torch.linspace(0.3 - width, 0.3 + width, 6, dtype=F64) if width else torch.full((3,), 0.3, dtype=F64)
    budgets = low + fr * (high - low)
    many = ops.solve_mckp(v, c, budgets)
    _same(many, ref.solve_mckp(v, c, budgets))
    for k in range(budgets.numel()):
        one = ops.solve_mckp(v, c, budgets[k : k + 1])
        assert torch.equal(one[0][0], many[0][k]) and torch.equal(one[1][0], many[1][k])
        torch.testing.assert_close(one[2][0], many[2][k], rtol=1e-12, atol=0)


def test_budget_batch_with_ties_at_lambda():
    """Integer data and budgets equal to frontier points: the tie rule (individual, then step
    order) decides lam* for every budget of the batch exactly as for a single budget."""
    v, c = random_mckp(N_BRACKET, 4, 2, kind="ties")
    spend = ref.budget_frontier(v, c)[1]
    k = int(0.4 * (len(spend) - 1))
    budgets = spend[k : k + 40 : 8].clone()
    _same(ops.solve_mckp(v, c, budgets), ref.solve_mckp(v, c, budgets))


def _batch_budgets(v, c, k):
    """K budgets in no order, drawn from: below the cheapest policy (infeasible), exactly on frontier
    points (lam* a tie), between them, repeated, and above the dearest policy (take_all)."""
    spend = ref.budget_frontier(v, c)[1].to(F64)
    g = torch.Generator().manual_seed(k)
    idx = torch.randint(0, len(spend) - 1, (k,), generator=g)
    low, high = float(spend[0]), float(spend[-1])
    pool = torch.cat(
        [
            torch.tensor([0.5 * low, low, high + 1.0, float(spend[idx[0]])], dtype=F64),
            spend[idx],
            0.5 * (spend[idx] + spend[idx + 1]),
        ]
    )
    return pool[torch.randperm(len(pool), generator=g)[:k]]


@pytest.mark.parametrize("k", [2, 12, 40])  # 40: more budgets than the pass counts, so it searches
@pytest.mark.parametrize("m", [2, 5, 8])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["rand", "ties", "dup"])
def test_budget_batch_full_algorithm_matches_single_calls_and_twin(k, m, dtype, kind):
    """Below the fast path's size every batch takes the full algorithm, whose pass 3 serves all the
    budgets at once with the cuts sorted: the same lam and choices as one call per budget and as
    the twin, for infeasible, take-all, repeated and tied budgets in any order."""
    v, c = random_mckp(3_001, m, 5 + m, dtype=dtype, kind=kind)
    budgets = _batch_budgets(v, c, k)
    many = ops.solve_mckp(v, c, budgets)
    _same(many, ref.solve_mckp(v, c, budgets))
    for q in range(k):
        one = ops.solve_mckp(v, c, budgets[q : q + 1])
        assert torch.equal(one[0][0], many[0][q]) and torch.equal(one[1][0], many[1][q])
        assert torch.equal(one[5][0], many[5][q])
        torch.testing.assert_close(one[2][0], many[2][q], rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(one[3][0], many[3][q], rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("k", [1, 5, 40])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["rand", "ties"])
def test_apply_cut_with_hand_made_cuts_matches_twin(k, dtype, kind):
    """apply_mckp_cut with cuts no solver makes: lam on breakpoints (ties broken by (individual,
    step) on either side) and 0, in any order; then with +inf and negative lam among them (which
    take the per-cut walk)."""
    v, c = random_mckp(2_000, 6, 3, dtype=dtype, kind=kind)
    bp = ref.mckp_events(v, c, None, None)[0]
    g = torch.Generator().manual_seed(k)
    pool = torch.cat(
        [bp[torch.randint(0, len(bp), (max(k, 8),), generator=g)], torch.tensor([float("inf"), 0.0, -0.5], dtype=dtype)]
    )
    for odd in (False, True):
        lam = pool[torch.randperm(len(pool), generator=g)[:k]]
        if not odd:
            lam = lam.clamp(0.0, 1e6)
        ind = torch.randint(0, 2_000, (k,), generator=g)
        step = torch.randint(0, 7, (k,), generator=g)
        got, want = ops.apply_mckp_cut(v, c, lam, ind, step), ref.apply_mckp_cut(v, c, lam, ind, step)
        assert torch.equal(got[0], want[0])
        for x, y in zip(got[1:], want[1:]):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-9, equal_nan=True)  # lam = inf: r - inf * 0


# --------------------------------------------------------------------------------------------------
# threads and the portable kernels
# --------------------------------------------------------------------------------------------------


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic_across_threads(dtype):
    v, c = random_mckp(70_001, 16, 4, dtype=dtype)
    low, high = float(c.min(1).values.double().sum()), float(c.max(1).values.double().sum())
    budgets = low + torch.tensor([0.2, 0.21, 0.22], dtype=F64) * (high - low)
    old = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append((ops.solve_mckp(v, c, budgets), ops.solve_mckp(v, c, budgets[:1])))
    finally:
        torch.set_num_threads(old)
    for x, y in zip(*results):
        for a, b in zip(x, y):
            assert torch.equal(a, b)


_PORTABLE_SCRIPT = r"""
import sys, torch
sys.path.insert(0, sys.argv[2])
from test_solver_kernels import _cases
from bidfcl._ops import ops
torch.save([ops.solve_mckp(v, c, b) for v, c, b in _cases()], sys.argv[1])
"""


def _cases():
    out = []
    for dtype in DTYPES:
        for m in (2, 4, 8, 16):
            for kind in ("rand", "ties"):
                v, c = random_mckp(N_BRACKET, m, 50 + m, dtype=dtype, kind=kind)
                low, high = float(c.min(1).values.double().sum()), float(c.max(1).values.double().sum())
                for fr in ([0.25], [0.5, 0.52, 0.54]):
                    out.append((v, c, low + torch.tensor(fr, dtype=F64) * (high - low)))
    return out


@needs_ext
def test_portable_kernels_match_avx2(tmp_path):
    """The same answers, bit for bit (totals included), with the AVX2 kernels switched off."""
    path = tmp_path / "portable.pt"
    env = dict(os.environ, BIDFCL_DISABLE_AVX2="1")
    subprocess.run([sys.executable, "-c", _PORTABLE_SCRIPT, str(path), os.path.dirname(__file__)], env=env, check=True)
    portable = torch.load(path)
    for got, (v, c, b) in zip(portable, _cases()):
        here = ops.solve_mckp(v, c, b)
        for x, y in zip(here, got):
            assert torch.equal(x, y)
