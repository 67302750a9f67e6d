"""One rank of the tests in test_distributed.py: joins a gloo group on loopback, runs a suite of
cases and writes one JSON line per case to ``<out>/rank<r>.jsonl``.

Usage: python tests/_dist_worker.py RANK WORLD PORT SUITE OUT

Every case builds the whole problem from a seed on every rank, takes this rank's contiguous
shard, calls bidfcl.distributed and compares with bidfcl.solve_mckp / solve_mckp_rct on all rows.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import torch
import torch.distributed as dist

import bidfcl
from bidfcl import distributed as bd


def _splits(n: int, world: int, kind: str, gen: torch.Generator) -> list[int]:
    """Row counts per rank: even, uneven, or with empty shards."""
    if kind == "even":
        base = [n // world] * world
        base[-1] += n - sum(base)
        return base
    if kind == "empty_first":
        rest = _splits(n, world - 1, "uneven", gen) if world > 1 else [n]
        return [0] + rest
    if kind == "empty_last":
        return _splits(n, world - 1, "uneven", gen) + [0] if world > 1 else [n]
    cuts = sorted(torch.randint(0, n + 1, (world - 1,), generator=gen).tolist())
    bounds = [0] + cuts + [n]
    return [bounds[i + 1] - bounds[i] for i in range(world)]


def _problem(seed: int, n: int, m: int, dtype, ties: bool):
    """Values and costs with duplicated rows, equal values, zero costs and collinear options."""
    g = torch.Generator().manual_seed(seed)
    costs = torch.randint(0, 6, (n, m), generator=g).to(dtype) * 0.5  # many zero and equal costs
    values = torch.randint(-2, 12, (n, m), generator=g).to(dtype) * 0.25
    costs[:, 0] = 0.0
    if ties and m > 1:
        half = n // 3
        src = torch.randint(0, n, (half,), generator=g)
        dst = torch.randint(0, n, (half,), generator=g)
        values[dst], costs[dst] = values[src], costs[src]  # duplicated rows, spread over ranks
        values[:, 1][values[:, 1] > 1] = 1.0  # many equal values
    return values, costs, g


def _budget_set(values, costs, g, k: int) -> torch.Tensor:
    """Budgets below the cheapest policy, exactly at frontier points (also inside tie runs),
    between points and above everything."""
    fr = bidfcl.budget_frontier(values, costs)
    pts = fr.spend
    picks = torch.randint(0, pts.numel(), (k,), generator=g)
    exact = pts[picks]
    between = (pts[picks] + pts[(picks + 1).clamp(max=pts.numel() - 1)]) / 2
    lo = torch.tensor([float(pts[0]) * 0.5 - 1.0, 0.0])
    hi = torch.tensor([float(pts[-1]) + 1.0])
    return torch.cat([lo, exact, between, hi]).clamp_min(0.0).to(torch.float64)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def _close(a, b) -> bool:
    a, b = a.double(), b.double()
    both_inf = torch.isinf(a) & torch.isinf(b) & (torch.sign(a) == torch.sign(b))
    return bool((both_inf | torch.isclose(a, b, rtol=1e-10, atol=1e-9)).all())


def _shard(t, sizes, rank):
    start = sum(sizes[:rank])
    return t[start : start + sizes[rank]]


def _interior_budgets(values, costs, g, k: int) -> torch.Tensor:
    """Budgets inside the frontier (20%..80% of its points): exactly at points (also inside tie runs)
    and between them, where every shard's own solve is finite: the bracketed path of bd.solve_mckp."""
    pts = bidfcl.budget_frontier(values, costs).spend
    lo, hi = int(pts.numel() * 0.2), max(int(pts.numel() * 0.8), int(pts.numel() * 0.2) + 2)
    picks = torch.randint(lo, hi - 1, (k,), generator=g)
    return torch.cat([pts[picks], (pts[picks] + pts[picks + 1]) / 2]).to(torch.float64)


def check_mckp(rank, world, seed, n, m, dtype, split, k, ties=True, scalar=False, interior=False):
    values, costs, g = _problem(seed, n, m, dtype, ties)
    budgets = (_interior_budgets if interior else _budget_set)(values, costs, g, k)
    sizes = _splits(n, world, split, g)
    budget = float(budgets[3]) if scalar else budgets
    ref = bidfcl.solve_mckp(values, costs, budget)
    got = bd.solve_mckp(_shard(values, sizes, rank), _shard(costs, sizes, rank), budget)
    ref_choice = ref.choice[..., sum(sizes[:rank]) : sum(sizes[: rank + 1])]
    problems = []
    if not _same(got.lam, ref.lam):
        problems.append(f"lam {got.lam.tolist()} != {ref.lam.tolist()}")
    if not torch.equal(got.choice, ref_choice):
        problems.append(f"choice differs at {int((got.choice != ref_choice).sum())} entries")
    for name in ("spend", "value", "dual_bound"):
        if not _close(getattr(got, name), getattr(ref, name)):
            problems.append(f"{name} {getattr(got, name).tolist()} != {getattr(ref, name).tolist()}")
    if not torch.equal(got.feasible, ref.feasible):
        problems.append("feasible differs")
    return problems, bd.last_stats()


def check_rct(rank, world, seed, n, m, dtype, split, k, prop_kind="none", missing_arm_on_rank=None):
    values, costs, g = _problem(seed, n, m, dtype, True)
    sizes = _splits(n, world, split, g)
    treatment = torch.randint(0, m, (n,), generator=g)
    if missing_arm_on_rank is not None:  # arm m-1 absent from that rank's shard (present elsewhere)
        start = sum(sizes[:missing_arm_on_rank])
        sl = treatment[start : start + sizes[missing_arm_on_rank]]
        sl[sl == m - 1] = 0
    # observed cost of the row's own arm, noisy: the IPW estimate then moves with the policy
    cost_obs = costs[torch.arange(n), treatment].double() * (torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
    cost_obs = cost_obs.to(dtype)
    if prop_kind == "none":
        propensity = None
        prop_local = None
    elif prop_kind == "arm":
        propensity = torch.full((m,), 1.0 / m, dtype=dtype)
        prop_local = propensity
    else:
        propensity = (torch.rand(n, generator=g) * 0.5 + 0.25).to(dtype)
        prop_local = _shard(propensity, sizes, rank)
    top = float(cost_obs.double().mean()) * 1.5  # about the estimate of the costliest policy
    per_cap = torch.cat(
        [
            torch.tensor([0.0, 1e-4]),
            torch.rand(k, generator=g, dtype=torch.float64) * top,
            torch.tensor([10.0 * top + 1.0]),
        ]
    ).to(torch.float64)
    ref = bidfcl.solve_mckp_rct(values, costs, treatment, cost_obs, per_cap, propensity)
    got = bd.solve_mckp_rct(
        _shard(values, sizes, rank),
        _shard(costs, sizes, rank),
        _shard(treatment, sizes, rank),
        _shard(cost_obs, sizes, rank),
        per_cap,
        prop_local,
    )
    ref_choice = ref.choice[:, sum(sizes[:rank]) : sum(sizes[: rank + 1])]
    problems = []
    if not _same(got.lam, ref.lam):
        problems.append(f"lam {got.lam.tolist()} != {ref.lam.tolist()}")
    if not torch.equal(got.choice, ref_choice):
        problems.append(f"choice differs at {int((got.choice != ref_choice).sum())} entries")
    if not _close(got.spend, ref.spend):
        problems.append(f"spend {got.spend.tolist()} != {ref.spend.tolist()}")
    if not torch.equal(got.feasible, ref.feasible):
        problems.append("feasible differs")
    return problems, bd.last_stats()


def expect_error(rank, fn, must_contain):
    try:
        fn()
    except bd.DistributedInputError as exc:
        missing = [s for s in must_contain if s not in str(exc)]
        return ([f"message {str(exc)!r} lacks {missing}"] if missing else []), {}
    return ["no error raised"], {}


def bad_cases(rank, world):
    v = torch.rand(6, 3)
    c = torch.rand(6, 3)
    t = torch.tensor([0, 1, 2, 0, 1, 0])
    co = torch.rand(6)
    yield (
        "option_counts",
        lambda: expect_error(
            rank,
            lambda: bd.solve_mckp(torch.rand(4, 3 + (rank == 1)), torch.rand(4, 3 + (rank == 1)), 1.0),
            ["option counts", "rank 1"],
        ),
    )
    yield (
        "dtypes",
        lambda: expect_error(
            rank,
            lambda: bd.solve_mckp(v.double() if rank == 1 else v, c.double() if rank == 1 else c, 1.0),
            ["dtypes", "rank 1"],
        ),
    )
    yield (
        "budgets",
        lambda: expect_error(
            rank, lambda: bd.solve_mckp(v, c, 1.0 + (rank == world - 1)), ["budgets differ", f"rank {world - 1}"]
        ),
    )
    yield (
        "budget_counts",
        lambda: expect_error(
            rank,
            lambda: bd.solve_mckp(v, c, torch.ones(2 + (rank == 1), dtype=torch.float64)),
            ["budget counts", "rank 1"],
        ),
    )
    bad_v = v.clone()
    if rank == 1:
        bad_v[2, 1] = float("nan")
    yield (
        "nan_on_one_rank",
        lambda: expect_error(
            rank, lambda: bd.solve_mckp(bad_v, c, 1.0), ["rank 1"] + (["finite"] if rank == 1 else [])
        ),
    )
    yield "negative_budget", lambda: expect_error(rank, lambda: bd.solve_mckp(v, c, -1.0), ["rank 0", "budget"])
    yield (
        "all_empty",
        lambda: expect_error(
            rank, lambda: bd.solve_mckp(torch.zeros(0, 3), torch.zeros(0, 3), 1.0), ["no rank holds any row"]
        ),
    )
    # arm 2 missing on every rank (others fine): an error everywhere
    t_no2 = t.clone()
    t_no2[t_no2 == 2] = 1
    yield (
        "empty_arm_globally",
        lambda: expect_error(
            rank, lambda: bd.solve_mckp_rct(v, c, t_no2, co, 0.1), ["arm(s) [2]", "no rows on any rank"]
        ),
    )
    bad_t = t.clone()
    if rank == 0:
        bad_t[3] = 7
    yield (
        "treatment_range",
        lambda: expect_error(
            rank, lambda: bd.solve_mckp_rct(v, c, bad_t, co, 0.1), ["rank 0"] + (["treatment"] if rank == 0 else [])
        ),
    )
    yield (
        "propensity_kinds",
        lambda: expect_error(
            rank,
            lambda: bd.solve_mckp_rct(v, c, t, co, 0.1, propensity=None if rank == 0 else torch.full((3,), 1 / 3)),
            ["propensity kinds"],
        ),
    )
    # after all these errors the group still works (nobody hangs, collectives stay in step)
    yield "still_in_step", lambda: check_mckp(rank, world, 5, 40, 3, torch.float32, "uneven", 2)


def suite_cases(rank, world, suite):
    """``main``: every case; ``lite``: every other plain case and all the tiny-bin ones (for 3 ranks)."""
    if suite == "bad":
        yield from bad_cases(rank, world)
        return
    for i, (name, fn) in enumerate(_all_cases(rank, world)):
        if suite == "main" or name.startswith("small_") or i % 2 == 0:
            yield name, fn


def _all_cases(rank, world):
    splits = ["even", "uneven", "empty_first", "empty_last"]
    for i, split in enumerate(splits):
        for dtype in (torch.float32, torch.float64):
            yield (
                f"mckp_{split}_{dtype}",
                (lambda s=split, d=dtype, i=i: check_mckp(rank, world, 100 + i, 240, 5, d, s, 6)),
            )
    yield "mckp_scalar_budget", lambda: check_mckp(rank, world, 7, 150, 4, torch.float32, "uneven", 3, scalar=True)
    yield "mckp_one_option", lambda: check_mckp(rank, world, 8, 50, 1, torch.float32, "uneven", 2)
    yield "mckp_no_ties", lambda: check_mckp(rank, world, 9, 300, 6, torch.float64, "even", 5, ties=False)
    for i, split in enumerate(("even", "uneven")):
        for dtype in (torch.float32, torch.float64):
            yield (
                f"bracket_mckp_{split}_{dtype}",
                (lambda s=split, d=dtype, i=i: check_mckp(rank, world, 500 + i, 400, 5, d, s, 3, interior=True)),
            )
            yield (
                f"bracket_scalar_{split}_{dtype}",
                (
                    lambda s=split, d=dtype, i=i: check_mckp(
                        rank, world, 510 + i, 400, 4, d, s, 2, scalar=True, interior=True
                    )
                ),
            )
    for i, kind in enumerate(["none", "arm", "row"]):
        for split in ("uneven", "empty_last"):
            yield (
                f"rct_{kind}_{split}",
                (
                    lambda k=kind, s=split, i=i: check_rct(
                        rank, world, 200 + i, 240, 4, torch.float64, s, 6, prop_kind=k
                    )
                ),
            )
    yield "rct_float32", lambda: check_rct(rank, world, 210, 200, 3, torch.float32, "even", 5)
    yield (
        "rct_arm_missing_on_rank_1",
        lambda: check_rct(rank, world, 220, 200, 3, torch.float64, "even", 5, missing_arm_on_rank=1),
    )

    # tiny bins and candidate cap: many rounds, and ties (one key with more events than the
    # cap) resolved from per-rank sums
    def small(fn):
        def run():
            old = bd.NUM_BINS, bd.CANDIDATE_CAP
            bd.NUM_BINS, bd.CANDIDATE_CAP = 4, 3
            try:
                return fn()
            finally:
                bd.NUM_BINS, bd.CANDIDATE_CAP = old

        return run

    for i, split in enumerate(splits):
        yield (
            f"small_mckp_{split}",
            small(lambda s=split, i=i: check_mckp(rank, world, 300 + i, 200, 4, torch.float32, s, 6)),
        )
        yield (
            f"small_rct_{split}",
            small(lambda s=split, i=i: check_rct(rank, world, 400 + i, 200, 4, torch.float64, s, 6)),
        )


def main():
    rank, world, port, suite, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    with open(os.path.join(out, f"rank{rank}.jsonl"), "w") as fh:
        for name, fn in suite_cases(rank, world, suite):
            try:
                problems, stats = fn()
            except Exception:  # reported, and the next case runs (all ranks failed alike or hang)
                problems, stats = [traceback.format_exc(limit=4)], {}
            fh.write(json.dumps({"case": name, "problems": problems, "stats": stats}) + "\n")
            fh.flush()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
