"""bidfcl.budgets: the budget units, their one conversion, and the callers that use it."""

from __future__ import annotations

import itertools

import pytest
import torch

from bidfcl import bench
from bidfcl import budgets as bu
from bidfcl.budgets import BudgetUnit, convert, spend_range
from bidfcl.cli import main
from bidfcl.data import make_marketing
from bidfcl.train.config import BUDGET_UNITS
from bidfcl.train.evaluate import per_capita_budgets

F64 = torch.float64
CONTEXT = {"reference_cost": 2.5, "n_rows": 400, "spend_range": (100.0, 900.0)}
#: a value of each unit that is inside every unit's range once converted
SAMPLE = {BudgetUnit.SHARE: 0.4, BudgetUnit.PER_CAPITA: 1.0, BudgetUnit.TOTAL: 400.0, BudgetUnit.RANGE_POSITION: 0.375}


def test_the_equations():
    assert convert(0.4, "share", "per_capita", reference_cost=2.5) == 2.5 * 0.4
    assert convert(1.25, "per_capita", "total", n_rows=400) == 1.25 * 400
    assert convert(500.0, "total", "per_capita", n_rows=400) == 500.0 / 400
    assert convert(0.3, "range_position", "total", spend_range=(100.0, 900.0)) == 100.0 + 0.3 * 800.0
    assert convert(0.4, "share", "total", reference_cost=2.5, n_rows=400) == (2.5 * 0.4) * 400
    assert (
        convert(0.3, "range_position", "per_capita", spend_range=(100.0, 900.0), n_rows=400)
        == (100.0 + 0.3 * 800.0) / 400
    )
    assert convert(340.0, "total", "range_position", spend_range=(100.0, 900.0)) == (340.0 - 100.0) / 800.0


@pytest.mark.parametrize("src, dst", list(itertools.product(BudgetUnit, BudgetUnit)))
def test_every_unit_round_trips(src, dst):
    there = convert(SAMPLE[src], src, dst, **CONTEXT)
    back = convert(there, dst, src, **CONTEXT)
    assert back == pytest.approx(SAMPLE[src], rel=1e-12)
    # every SAMPLE is the same budget: 0.4 of C_ref = 1 per capita = 400 in all = 37.5% of the range
    assert there == pytest.approx(SAMPLE[dst], rel=1e-12)


def test_numbers_lists_and_tensors_keep_their_kind():
    assert isinstance(convert(1, "per_capita", "total", n_rows=3), float)
    assert convert([1, 2.5], "per_capita", "total", n_rows=4) == [4.0, 10.0]
    got = convert(torch.tensor([1.0, 2.5], dtype=torch.float32), "per_capita", "total", n_rows=4)
    assert got.dtype == F64 and torch.equal(got, torch.tensor([4.0, 10.0], dtype=F64))
    assert convert(0.2, BudgetUnit.SHARE, BudgetUnit.SHARE) == 0.2  # no context needed for itself


def test_names_and_config_units():
    assert bu.budget_unit("per_capita") is BudgetUnit.PER_CAPITA and str(BudgetUnit.TOTAL) == "total"
    assert tuple(BUDGET_UNITS) == bu.CONFIG_UNITS  # the configs' units are three of the four
    with pytest.raises(
        ValueError,
        match=r"expected a budget unit in \['share', 'per_capita', 'total', "
        r"'range_position'\], got 'percent'",
    ):
        convert(1.0, "percent", "total", n_rows=3)


def test_a_zero_row_problem_has_a_zero_total_but_no_per_capita_of_a_total():
    assert convert(2.0, "per_capita", "total", n_rows=0) == 0.0
    with pytest.raises(ValueError, match=r"n_rows must be an integer >= 1 \(.*a total is divided by it\), got 0"):
        convert(2.0, "total", "per_capita", n_rows=0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"budget": -1.0, "from_unit": "total", "to_unit": "per_capita", "n_rows": 3},
            ValueError,
            r"budget \(total\) must be finite and >= 0, got -1.0",
        ),
        ({"budget": float("nan"), "from_unit": "per_capita", "to_unit": "total", "n_rows": 3}, ValueError, "got nan"),
        (
            {
                "budget": [1.0, float("inf")],
                "from_unit": "per_capita",
                "to_unit": "total",
                "n_rows": 3,
                "name": "eval.budgets",
            },
            ValueError,
            r"eval.budgets\[1\] \(per_capita\) must be finite and >= 0, got inf",
        ),
        (
            {"budget": torch.tensor([1.0, -2.0]), "from_unit": "per_capita", "to_unit": "total", "n_rows": 3},
            ValueError,
            r"budget \(entry 1\) \(per_capita\) must be finite and >= 0, got -2.0",
        ),
        (
            {"budget": 1.5, "from_unit": "range_position", "to_unit": "total", "spend_range": (0.0, 1.0)},
            ValueError,
            r"\(range_position\) must be in \[0, 1\], got 1.5",
        ),
        (
            {"budget": True, "from_unit": "per_capita", "to_unit": "total", "n_rows": 3},
            TypeError,
            "must be a number, a list of numbers or a tensor, got bool",
        ),
        ({"budget": "1", "from_unit": "per_capita", "to_unit": "total", "n_rows": 3}, TypeError, "got str '1'"),
        (
            {"budget": torch.tensor([True]), "from_unit": "per_capita", "to_unit": "total", "n_rows": 3},
            TypeError,
            "dtype torch.bool",
        ),
        (
            {"budget": 0.3, "from_unit": "share", "to_unit": "per_capita"},
            ValueError,
            "converting budget from share to per_capita needs reference_cost",
        ),
        ({"budget": 0.3, "from_unit": "per_capita", "to_unit": "total"}, ValueError, "needs n_rows"),
        ({"budget": 0.3, "from_unit": "range_position", "to_unit": "total"}, ValueError, "needs spend_range"),
        (
            {"budget": 0.3, "from_unit": "share", "to_unit": "per_capita", "reference_cost": 0.0},
            ValueError,
            r"reference_cost must be a finite number > 0, got 0.0",
        ),
        (
            {"budget": 0.3, "from_unit": "per_capita", "to_unit": "total", "n_rows": 2.5},
            ValueError,
            r"n_rows must be an integer >= 0",
        ),
        (
            {"budget": 0.3, "from_unit": "range_position", "to_unit": "total", "spend_range": (5.0, 1.0)},
            ValueError,
            r"spend_range must be \(lo, hi\).*got \(5.0, 1.0\)",
        ),
    ],
)
def test_bad_input_says_what_was_expected(kwargs, error, match):
    with pytest.raises(error, match=match):
        convert(**kwargs)


def test_spend_range_is_the_cheapest_and_dearest_policy():
    costs = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.5, 1.0]])
    assert spend_range(costs) == (0.5, 5.0)
    with pytest.raises(ValueError, match=r"costs must be 2-D \[N individuals, M >= 1 options\], got shape \[3\]"):
        spend_range(torch.ones(3))


# -------------------------------------------------------------------------------- the callers
def test_evaluation_budgets_convert_through_the_one_function():
    ds = make_marketing(n_rct=300, n_obs=0, n_val=0, n_test=0, seed=2).rct
    from bidfcl.train.datasets import max_arm_cost

    top = max_arm_cost(ds)
    assert per_capita_budgets([0.2, 0.5], "share", ds) == [top * 0.2, top * 0.5]
    assert per_capita_budgets([60.0], "total", ds) == [60.0 / 300]
    assert per_capita_budgets([60.0], "total", ds, n_rows=600) == [0.1]
    assert per_capita_budgets([1, 2], "per_capita", ds) == [1.0, 2.0]
    with pytest.raises(ValueError, match="expected a budget unit"):
        per_capita_budgets([1.0], "dollars", ds)


def test_bench_budgets_are_range_positions():
    _, costs = bench.random_allocation_problem(500, 4, seed=1, dtype=torch.float64)
    lo, hi = spend_range(costs)
    got = bench.budgets_between(costs, 3, 0.1, 0.9)
    assert got == [lo + f * (hi - lo) for f in (0.1, 0.5, 0.9)]


def test_oracle_takes_per_capita_budgets_in_any_form():
    d = make_marketing(n_rct=50, n_obs=0, n_val=0, n_test=200, seed=3)
    a = d.oracle([0.2, 0.6], "test")
    b = d.oracle(torch.tensor([0.2, 0.6]), "test")
    c = d.oracle(0.6, "test")
    assert torch.equal(a.choice, b.choice) and torch.equal(a.choice[1], c.choice)
    assert bool((a.cost <= torch.tensor([0.2, 0.6], dtype=F64) * (1 + 1e-9)).all())
    with pytest.raises(ValueError, match=r"budget_per_capita \(per_capita\) must be finite and >= 0, got -0.1"):
        d.oracle(-0.1, "test")


def test_solve_demo_budget_position_and_its_old_name(capsys):
    assert main(["solve-demo", "--users", "3000", "--budget-position", "0.6"]) == 0
    new = capsys.readouterr().out
    assert main(["solve-demo", "--users", "3000", "--budget-fraction", "0.6"]) == 0
    old = capsys.readouterr().out
    line = [ln for ln in new.splitlines() if "budget =" in ln][0]
    assert "60% of the way from the cheapest to the dearest policy" in line
    assert line.split("budget =")[1] == [ln for ln in old.splitlines() if "budget =" in ln][0].split("budget =")[1]
    assert [ln for ln in new.splitlines() if "lam*" in ln] == [ln for ln in old.splitlines() if "lam*" in ln]
