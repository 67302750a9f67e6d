"""bidfcl.propensity: the one contract of a ``propensity`` argument, and every former caller agreeing on it."""

from __future__ import annotations

import pytest
import torch

import bidfcl
from bidfcl import losses, metrics
from bidfcl.data import DataError, UpliftDataset
from bidfcl.propensity import arm_counts, arm_propensity, row_propensity

F32, F64 = torch.float32, torch.float64


def _labels(n=12, m=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, m, (n,), generator=g)
    t[:m] = torch.arange(m)  # every arm present
    return t


def _rct(n=40, m=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(n, m, generator=g, dtype=F64) * torch.arange(1, m + 1, dtype=F64)
    c = torch.rand(n, m, generator=g, dtype=F64) * torch.arange(m, dtype=F64)
    t = _labels(n, m, seed)
    rev = torch.rand(n, generator=g, dtype=F64) * 3
    cost = c[torch.arange(n), t] * (0.5 + torch.rand(n, generator=g, dtype=F64))
    return r, c, t, rev, cost


# ----------------------------------------------------------------------------- accepted forms
def test_none_is_the_arm_shares_of_the_rows():
    t = torch.tensor([0, 1, 1, 2, 2, 2])
    expected = torch.tensor([1 / 6, 2 / 6, 2 / 6, 3 / 6, 3 / 6, 3 / 6], dtype=F64)
    assert torch.equal(arm_counts(t, 3), torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    torch.testing.assert_close(row_propensity(None, t, num_options=3), expected, rtol=0, atol=0)
    torch.testing.assert_close(row_propensity(None, t), expected, rtol=0, atol=0)  # M = max(t) + 1
    torch.testing.assert_close(arm_propensity(t, 3, F64), expected, rtol=0, atol=0)
    # an arm beyond the labels changes nothing for the rows
    torch.testing.assert_close(row_propensity(None, t, num_options=5), expected, rtol=0, atol=0)


def test_per_row_per_arm_and_lists():
    t = torch.tensor([0, 2, 1, 2, 0])
    per_arm = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    assert torch.equal(row_propensity(per_arm, t, num_options=3), per_arm[t])
    assert torch.equal(row_propensity(per_arm, t), per_arm[t])  # M from the vector
    assert torch.equal(row_propensity([0.2, 0.3, 0.5], t, num_options=3), per_arm[t])
    per_row = torch.tensor([0.2, 0.5, 0.3, 0.5, 0.2], dtype=F64)
    assert row_propensity(per_row, t, num_options=3) is per_row  # already right: no copy
    assert torch.equal(row_propensity(per_row.tolist(), t, num_options=3), per_row)
    got = row_propensity(per_row, t, num_options=3, dtype=F32)
    assert got.dtype == F32 and torch.equal(got, per_row.float())


def test_per_row_wins_when_n_equals_m():
    t = torch.tensor([0, 2, 1])
    p = torch.tensor([0.1, 0.2, 0.7], dtype=F64)
    assert torch.equal(row_propensity(p, t, num_options=3), p)  # not p[t]


def test_counts_give_the_shares_of_other_rows():
    """``counts``: the shares of a larger sample (e.g. all-reduced over data-parallel ranks)."""
    t = torch.tensor([0, 0, 1])
    counts = torch.tensor([10.0, 30.0], dtype=F64)
    assert torch.equal(
        row_propensity(None, t, num_options=2, counts=counts), torch.tensor([0.25, 0.25, 0.75], dtype=F64)
    )
    assert torch.equal(row_propensity(None, t, counts=counts), torch.tensor([0.25, 0.25, 0.75], dtype=F64))


def test_counts_must_have_one_entry_per_arm():
    with pytest.raises(ValueError, match=r"counts must have shape \[M=3\] \(rows per arm\), got \[2\]"):
        row_propensity(None, torch.tensor([0, 1]), num_options=3, counts=torch.ones(2, dtype=F64))


def test_empty_rows_give_an_empty_result():
    t = torch.zeros(0, dtype=torch.int64)
    assert row_propensity(None, t, num_options=3, dtype=F32).shape == (0,)
    assert row_propensity(None, t).shape == (0,)
    assert row_propensity(torch.zeros(0, dtype=F64), t, num_options=3).shape == (0,)


def test_float32_shares_are_float64_shares_rounded_once():
    """Counts and divisions in float64, one rounding to the dtype (the contract's accumulation)."""
    t = _labels(10_007, 7, 3)
    p64 = arm_propensity(t, 7, F64)
    p32 = arm_propensity(t, 7, F32)
    assert p32.dtype == F32 and torch.equal(p32, p64.float())
    counts = torch.bincount(t, minlength=7).to(F64)
    assert torch.equal(p64, (counts / len(t))[t])


def test_out_of_range_labels_are_clamped_for_the_ops_lazy_check():
    """With M known the labels are the caller's (or the op's lazy) check: no index error here."""
    t = torch.tensor([0, 1, 5, -1])
    assert row_propensity(None, t, num_options=2).shape == (4,)
    assert row_propensity(torch.tensor([0.5, 0.5], dtype=F64), t, num_options=2).shape == (4,)


# --------------------------------------------------------------------------------- bad forms
@pytest.mark.parametrize(
    "bad, error, match",
    [
        (0.5, TypeError, r"propensity must be None, a per-row \[N\] or a per-arm \[M\] tensor .*got float 0.5"),
        (
            torch.tensor(0.5, dtype=F64),
            ValueError,
            r"per-row \[N=5\] or per-arm \[M=3\], got shape \[\] \(a 0-d tensor",
        ),
        (
            torch.full((5, 3), 1 / 3, dtype=F64),
            ValueError,
            r"got shape \[5, 3\] \(a \[N, M\] matrix .*p\[torch.arange\(N\)",
        ),
        (
            torch.full((4,), 0.25, dtype=F64),
            ValueError,
            r"propensity must be None, per-row \[N=5\] or per-arm \[M=3\], "
            r"got shape \[4\]",
        ),
        (
            torch.ones(5, dtype=torch.int64),
            TypeError,
            "propensity must be a float tensor of probabilities, got dtype torch.int64",
        ),
        (torch.ones(5, dtype=torch.bool), TypeError, "got dtype torch.bool"),
        (["a", "b", "c"], TypeError, "propensity as a list must hold numbers"),
        ("0.5", TypeError, "propensity must be a torch.Tensor, got str"),
    ],
)
def test_bad_forms_are_refused_with_what_to_pass(bad, error, match):
    t = torch.tensor([0, 1, 2, 1, 0])
    with pytest.raises(error, match=match):
        row_propensity(bad, t, num_options=3)


def test_with_m_unknown_a_per_arm_vector_must_cover_the_labels():
    t = torch.tensor([0, 1, 2, 1])
    with pytest.raises(
        ValueError,
        match=r"treatment must be in \[0, M\) = \[0, 2\) for a per-arm propensity, "
        r"got 2 at row 2",
    ):
        row_propensity(torch.tensor([0.5, 0.5], dtype=F64), t)
    with pytest.raises(ValueError, match=r"at most bidfcl.MAX_OPTIONS = 256 entries"):
        row_propensity(torch.full((300,), 0.5, dtype=F64), t)


# ------------------------------------------------------------ every former caller agrees
def test_solver_losses_metrics_and_dataset_resolve_alike():
    r, c, t, rev, cost = _rct()
    n, m = r.shape
    resolved = row_propensity(None, t, num_options=m, dtype=F64)
    a = bidfcl.solve_mckp_rct(r, c, t, cost, 0.4)
    b = bidfcl.solve_mckp_rct(r, c, t, cost, 0.4, propensity=resolved)
    assert torch.equal(a.lam, b.lam) and torch.equal(a.choice, b.choice) and torch.equal(a.spend, b.spend)
    lam = a.lam
    assert torch.equal(losses.ppl_loss(r, c, t, rev, lam), losses.ppl_loss(r, c, t, rev, lam, resolved))
    assert torch.equal(losses.pifd_loss(r, c, t, rev, lam), losses.pifd_loss(r, c, t, rev, lam, resolved))
    assert torch.equal(
        losses.dpl_loss(r, c, t, rev, cost, [0.5, 1.0]), losses.dpl_loss(r, c, t, rev, cost, [0.5, 1.0], resolved)
    )
    for x, y in zip(
        metrics.policy_value(a.choice, t, rev, cost), metrics.policy_value(a.choice, t, rev, cost, resolved)
    ):
        assert torch.equal(x, y)
    for x, y in zip(metrics.eom(r, c, t, rev, cost, 0.4), metrics.eom(r, c, t, rev, cost, 0.4, resolved)):
        assert torch.equal(x, y)
    ds = UpliftDataset(torch.zeros(n, 2, dtype=F64), t, rev, cost, n_options=m)
    assert torch.equal(ds.row_propensity(), resolved)
    given = UpliftDataset(torch.zeros(n, 2, dtype=F64), t, rev, cost, propensity=resolved.clone(), n_options=m)
    assert given.row_propensity() is given.propensity


def test_public_names_stay_where_they_were():
    assert bidfcl.solver.arm_propensity is arm_propensity
    assert not hasattr(bidfcl.solver, "_row_propensity") and not hasattr(metrics, "_policy_propensity")


def test_the_disagreement_per_arm_length_is_refused_by_every_caller_that_knows_m():
    """Formerly the metrics took a per-arm vector of any length covering the labels (the solver and
    the losses refused it): with M known, a vector of another length is refused everywhere."""
    r, c, t, rev, cost = _rct(n=40, m=3)
    longer = torch.tensor([0.3, 0.3, 0.3, 0.1], dtype=F64)  # 4 entries for 3 options
    match = r"propensity must be None, per-row \[N=40\] or per-arm \[M=3\], got shape \[4\]"
    with pytest.raises(ValueError, match=match):
        bidfcl.solve_mckp_rct(r, c, t, cost, 0.4, propensity=longer)
    with pytest.raises(ValueError, match=match):
        losses.ppl_loss(r, c, t, rev, 1.0, longer)
    with pytest.raises(ValueError, match=match):
        metrics.eom(r, c, t, rev, cost, 0.4, longer)
    with pytest.raises(ValueError, match=match):
        metrics.policy_value(t, t, rev, cost, longer, n_options=3)
    # without n_options the vector defines M (as before): 4 arms, the labels lie below
    pv = metrics.policy_value(t, t, rev, cost, longer)
    torch.testing.assert_close(pv.value, (rev / longer[t]).mean())


def test_the_disagreement_dataset_label_out_of_range_is_a_data_error():
    """Formerly an IndexError from torch's gather; now a DataError naming the row."""
    ds = UpliftDataset(torch.zeros(3, 1), torch.tensor([0, 1, 3]), torch.zeros(3), torch.zeros(3), n_options=2)
    with pytest.raises(DataError, match=r"expected treatment in \[0, 2\) to look up its arm share, got 3 at row 2"):
        ds.row_propensity()


def test_resolving_twice_gives_the_same_tensor():
    t = _labels(1000, 5, 4)
    assert torch.equal(
        row_propensity(None, t, num_options=5, dtype=F32), row_propensity(None, t, num_options=5, dtype=F32)
    )
