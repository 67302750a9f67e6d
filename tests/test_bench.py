"""`bidfcl bench` and bidfcl.bench: the peers give the answers they claim, the command's options and
JSON output work (timings are reported, never asserted)."""

import json

import numpy as np
import pytest
import torch

import bidfcl
from bidfcl import bench
from bidfcl.cli import main


def test_peers_agree_with_the_exact_solve():
    values, costs = bench.random_allocation_problem(3000, 5, seed=3, dtype=torch.float64)
    for budget in bench.budgets_between(costs, 3):
        sol = bidfcl.solve_mckp(values, costs, budget)
        lam_t, val_t = bench.torch_bisection(values, costs, budget)
        lam_n, val_n = bench.numpy_bisection(values.numpy(), costs.numpy(), budget)
        # both bisections end at a feasible lam just above lam*; their values are feasible policies
        assert val_n <= float(sol.dual_bound) + 1e-9 and val_t <= float(sol.dual_bound) + 1e-9
        assert lam_n == pytest.approx(float(sol.lam), rel=1e-6, abs=1e-9)
        assert lam_t == pytest.approx(float(sol.lam), rel=1e-6, abs=1e-9)
        rows = np.arange(3000)
        choice = np.argmax(values.numpy() - lam_n * costs.numpy(), axis=1)
        assert costs.numpy()[rows, choice].sum() <= budget * (1 + 1e-12)
    assert float(bench.stream_pass(values, costs)) == pytest.approx(float(values.sum() + costs.sum()))


def test_highs_lp_value_lies_between_value_and_bound():
    pytest.importorskip("scipy")
    values, costs = bench.random_allocation_problem(300, 4, seed=1, dtype=torch.float64)
    budget = bench.budgets_between(costs, 1, 0.4, 0.4)[0]
    sol = bidfcl.solve_mckp(values, costs, budget)
    lp = bench.highs_lp_relaxation(values.numpy(), costs.numpy(), budget)
    assert float(sol.value) - 1e-9 <= lp <= float(sol.dual_bound) + 1e-9


def test_bench_case_rows():
    rows = bench.bench_case(
        2000, 4, budgets=3, repeats=1, peers=("exact", "stream", "numpy-bisect", "highs"), highs_max_users=1000
    )
    assert [r.impl for r in rows] == ["exact", "stream", "numpy-bisect"]  # HiGHS skipped above 1000 users
    exact = rows[0]
    assert exact.vs_exact == 1.0 and exact.users_per_s > 0 and exact.gb_per_s > 0
    assert rows[2].extra["value_gap_vs_exact"] >= -1e-6
    with pytest.raises(ValueError, match="unknown peer"):
        bench.bench_case(10, 2, peers=("exact", "gurobi"))


def test_bench_command_json(capsys):
    assert (
        main(
            [
                "bench",
                "--users",
                "1e3,2000",
                "--options",
                "2,16",
                "--dtype",
                "float32,float64",
                "--peers",
                "exact,stream,torch-bisect",
                "--repeats",
                "1",
                "--json",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 * 2 * 2 * 3
    assert {r["dtype"] for r in rows} == {"float32", "float64"} and {r["options"] for r in rows} == {2, 16}
    assert all(r["seconds"] > 0 for r in rows)


def test_bench_command_table_and_errors(capsys):
    assert main(["bench", "--users", "500", "--peers", "exact,stream", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "N = 500, M = 8" in out and "exact" in out and "stream" in out
    for argv, needle in [
        (["--users", "0"], ">= 1"),
        (["--options", "300"], "at most 256"),
        (["--dtype", "float16"], "float32 and/or float64"),
        (["--peers", "x"], "unknown peer"),
    ]:
        try:
            rc = main(["bench", *argv])
        except SystemExit as exc:
            rc = exc.code
        assert rc == 2 and needle in capsys.readouterr().err
