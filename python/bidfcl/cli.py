"""The ``bidfcl`` command (also ``python -m bidfcl``)."""

from __future__ import annotations

import argparse
import sys
import time

import torch

__all__ = ["main"]


def random_allocation_problem(n: int, m: int, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A random marketing-shaped allocation problem: option 0 is free, costs grow with the option,
    revenue grows with diminishing returns and a per-user responsiveness."""
    g = torch.Generator().manual_seed(seed)
    responsiveness = torch.rand(n, 1, generator=g, dtype=torch.float64) * 2.0
    base = torch.rand(n, 1, generator=g, dtype=torch.float64)
    level = torch.arange(m, dtype=torch.float64).unsqueeze(0)
    unit_cost = 0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64)
    costs = unit_cost * level * (1.0 + 0.1 * torch.rand(n, m, generator=g, dtype=torch.float64))
    uplift = responsiveness * torch.log1p(level) * (0.8 + 0.4 * torch.rand(n, m, generator=g, dtype=torch.float64))
    values = base + uplift
    return values.to(dtype), costs.to(dtype)


def _demo(args) -> int:
    import bidfcl

    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    values, costs = random_allocation_problem(args.users, args.options, args.seed, dtype)
    t_gen = time.perf_counter() - t0
    low = float(costs.min(1).values.double().sum())
    high = float(costs.max(1).values.double().sum())
    budget = low + args.budget_fraction * (high - low)
    bidfcl.solve_mckp(values[:1000], costs[:1000], budget * 1000 / args.users, method=args.method)  # warm-up
    t0 = time.perf_counter()
    sol = bidfcl.solve_mckp(values, costs, budget, method=args.method)
    t_solve = time.perf_counter() - t0
    t0 = time.perf_counter()
    _ = values.sum() + costs.sum()
    t_stream = time.perf_counter() - t0
    gap = float(sol.dual_bound) - float(sol.value)
    print(f"bidfcl {bidfcl.__version__} demo: allocation of {args.options} options to {args.users:,} users ({args.dtype}, {torch.get_num_threads()} threads)")
    print(f"  problem generated in {t_gen:.2f} s; budget = {budget:,.2f} ({args.budget_fraction:.0%} of the way from the cheapest to the dearest policy)")
    print(f"  method            {args.method}")
    print(f"  lam*              {float(sol.lam):.9g}")
    print(f"  spend / budget    {float(sol.spend):,.4f} / {budget:,.4f} = {float(sol.spend) / budget:.9f}")
    print(f"  value             {float(sol.value):,.4f}")
    print(f"  dual bound        {float(sol.dual_bound):,.4f}  (gap {gap:,.4f} = {gap / abs(float(sol.dual_bound)):.2e} relative; optimum lies in between)")
    print(f"  users upgraded    {int((sol.choice > 0).sum()):,} of {args.users:,}")
    print(f"  solve time        {t_solve * 1e3:.1f} ms  ({t_solve / t_stream:.1f}x one streaming pass over the inputs, {t_stream * 1e3:.1f} ms)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bidfcl", description="Budget-constrained marketing allocation, learned for the decision.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="solve a random 1M-user, 8-option allocation problem and report lam*, spend, value, bound and time")
    demo.add_argument("--users", type=int, default=1_000_000)
    demo.add_argument("--options", type=int, default=8)
    demo.add_argument("--budget-fraction", type=float, default=0.3, help="budget between the cheapest (0) and dearest (1) policy")
    demo.add_argument("--method", choices=["exact", "bisection"], default="exact")
    demo.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "users", 1) < 1 or getattr(args, "options", 1) < 1:
        print("bidfcl: --users and --options must be >= 1", file=sys.stderr)
        return 2
    if not 0.0 <= getattr(args, "budget_fraction", 0.0) <= 1.0:
        print("bidfcl: --budget-fraction must be in [0, 1]", file=sys.stderr)
        return 2
    return args.func(args)
