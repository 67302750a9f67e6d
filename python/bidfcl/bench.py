"""Solver throughput next to its peers, measured in the same run (``bidfcl bench``, and the code the
``benchmarks/`` files reuse).

The problem is :func:`random_allocation_problem` (marketing-shaped: option 0 free, costs rising with
the option, revenue with diminishing returns) at K budgets evenly spaced between 10% and 90% of
the way from the cheapest to the dearest policy. The implementations, all on the same tensors:

* ``exact``: :func:`bidfcl.solve_mckp`, the exact breakpoint solve (one call for all K budgets);
* ``stream``: one streaming pass over the inputs, ``values.sum() + costs.sum()``, the memory floor;
* ``torch-bisect``: a 50-step eager bisection on lam in PyTorch (what a user would write: one argmax
  pass and one host read per step), the twin of ``method="bisection"``, once per budget;
* ``numpy-bisect``: the same 50-step bisection in NumPy, once per budget;
* ``highs``: the LP relaxation with SciPy's HiGHS (``scipy.optimize.linprog``), once per budget,
  only up to ``highs_max_users`` users (it is far slower).

The answers are checked: the slow peers' checked run is also their (single) timed run. The exact solve must be feasible. The
bisections must reach at most the exact value, and the LP value must lie between the exact value
and its dual bound. Each row reports the median time over ``repeats`` (after one warm-up; once for
the slow peers),
users per second (N * K / t), bytes read per second ((N * M * 2 * itemsize) / t per pass; the
exact solve reads the inputs a few times), and the ratio to ``exact``.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from . import _reference as ref
from . import budgets as budget_units
from .budgets import BudgetUnit
from .devices import resolve_device
from .solver import solve_mckp

__all__ = [
    "random_allocation_problem",
    "budgets_between",
    "PEERS",
    "BenchRow",
    "bench_case",
    "format_rows",
    "numpy_bisection",
    "torch_bisection",
    "highs_lp_relaxation",
    "stream_pass",
    "bench_budget_batch",
]

#: every implementation ``bidfcl bench`` knows, in report order
PEERS = ("exact", "stream", "torch-bisect", "numpy-bisect", "highs")


def random_allocation_problem(n: int, m: int, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A random marketing-shaped allocation problem ``(values, costs)`` ``[n, m]``: option 0 is free,
    costs grow with the option, revenue grows with diminishing returns and a per-user responsiveness."""
    g = torch.Generator().manual_seed(seed)
    responsiveness = torch.rand(n, 1, generator=g, dtype=torch.float64) * 2.0
    base = torch.rand(n, 1, generator=g, dtype=torch.float64)
    level = torch.arange(m, dtype=torch.float64).unsqueeze(0)
    unit_cost = 0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64)
    costs = unit_cost * level * (1.0 + 0.1 * torch.rand(n, m, generator=g, dtype=torch.float64))
    uplift = responsiveness * torch.log1p(level) * (0.8 + 0.4 * torch.rand(n, m, generator=g, dtype=torch.float64))
    values = base + uplift
    return values.to(dtype), costs.to(dtype)


def budgets_between(costs: torch.Tensor, k: int, low: float = 0.1, high: float = 0.9) -> list[float]:
    """``k`` total budgets evenly spaced from ``low`` to ``high`` of the way from the cheapest policy's
    spend to the dearest's (range positions, :mod:`bidfcl.budgets`); with ``k = 1`` the single budget
    sits at ``low``."""
    positions = [low] if k == 1 else [low + (high - low) * i / (k - 1) for i in range(k)]
    return budget_units.convert(
        positions,
        BudgetUnit.RANGE_POSITION,
        BudgetUnit.TOTAL,
        spend_range=budget_units.spend_range(costs),
        name="budget_range",
    )


# ----------------------------------------------------------------------------------- the peers
def stream_pass(values: torch.Tensor, costs: torch.Tensor) -> torch.Tensor:
    """One read of both inputs: the memory floor every solver is compared with."""
    return values.sum() + costs.sum()


def torch_bisection(values: torch.Tensor, costs: torch.Tensor, budget: float, steps: int = 50):
    """The eager PyTorch bisection (the pure-PyTorch twin of ``method="bisection"``): ``(lam, value)``."""
    out = ref.solve_mckp_bisection(values, costs, torch.tensor([budget], dtype=torch.float64), steps, 0.0)
    return float(out[0][0]), float(out[3][0])


def numpy_bisection(values: np.ndarray, costs: np.ndarray, budget: float, steps: int = 50):
    """A 50-step bisection on lam in NumPy: ``choice(lam) = argmax_j (v - lam c)``; the feasible end of
    the bracket ``[0, max v/c]`` is returned as ``(lam, value)``."""
    rows = np.arange(values.shape[0])

    def policy(lam: float):
        choice = np.argmax(values - lam * costs, axis=1)
        return float(costs[rows, choice].sum(dtype=np.float64)), float(values[rows, choice].sum(dtype=np.float64))

    pos = costs > 0
    hi = float(np.max(np.where(pos, values / np.where(pos, costs, 1.0), 0.0))) or 1.0
    while policy(hi)[0] > budget and hi < 1e30:
        hi *= 2.0
    lo = 0.0
    if policy(lo)[0] <= budget:
        return 0.0, policy(0.0)[1]
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if policy(mid)[0] <= budget:
            hi = mid
        else:
            lo = mid
    return hi, policy(hi)[1]


def highs_lp_relaxation(values: np.ndarray, costs: np.ndarray, budget: float) -> float:
    """Optimal value of the LP relaxation (``0 <= x_ij``, ``sum_j x_ij = 1``, ``sum c x <= B``) with HiGHS."""
    from scipy import sparse  # noqa: PLC0415 (optional dependency (an extra), imported where used)
    from scipy.optimize import linprog  # noqa: PLC0415 (optional dependency (an extra), imported where used)

    n, m = values.shape
    one = sparse.kron(sparse.identity(n, format="csr"), np.ones((1, m)), format="csr")
    res = linprog(
        -values.reshape(-1).astype(np.float64),
        A_ub=costs.reshape(1, -1).astype(np.float64),
        b_ub=[budget],
        A_eq=one,
        b_eq=np.ones(n),
        bounds=(0, None),
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"HiGHS did not solve the LP relaxation: {res.message}")
    return -float(res.fun)


# ------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass
class BenchRow:
    """One implementation on one problem: time (median, seconds) and the derived rates."""

    users: int
    options: int
    budgets: int
    dtype: str
    device: str
    threads: int
    impl: str
    seconds: float
    users_per_s: float
    gb_per_s: float
    vs_exact: float  #: this time / exact's time (1 for exact; < 1 means faster than exact)
    check: str = ""  #: what was verified before timing
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def bench_case(
    users: int,
    options: int,
    *,
    dtype: torch.dtype = torch.float32,
    budgets: int = 1,
    device: str | torch.device = "cpu",
    peers: Sequence[str] = PEERS,
    repeats: int = 5,
    highs_max_users: int = 10_000,
    bisect_max_users: Optional[int] = None,
    seed: int = 0,
    budget_range: tuple[float, float] = (0.1, 0.9),
) -> list[BenchRow]:
    """Time every implementation in ``peers`` on one random problem (checked first); see the module doc.
    ``bisect_max_users`` (None: no limit) and ``highs_max_users`` skip the slow peers on big sizes."""
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"bidfcl bench: unknown peer(s) {unknown}; expected some of {list(PEERS)}")
    dev = resolve_device(device, "device")
    values, costs = random_allocation_problem(users, options, seed, dtype)
    b_list = budgets_between(costs, budgets, *budget_range)
    values, costs = values.to(dev), costs.to(dev)
    b_tensor = torch.tensor(b_list, dtype=torch.float64, device=dev)
    bytes_per_pass = 2 * values.numel() * values.element_size()
    threads = torch.get_num_threads()

    # correctness first
    sol = solve_mckp(values, costs, b_tensor)
    if not bool(sol.feasible.all()) or bool((sol.spend > b_tensor * (1 + 1e-9)).any()):
        raise RuntimeError("bidfcl bench: the exact solve returned an infeasible answer")
    exact_value = sol.value.double().cpu().tolist()
    exact_bound = sol.dual_bound.double().cpu().tolist()
    tol = 1e-6 * max(1.0, max(abs(v) for v in exact_bound))

    def timed(fn):
        _sync(dev)
        t0 = time.perf_counter()
        out = fn()
        _sync(dev)
        return out, time.perf_counter() - t0

    checks: dict[str, tuple[str, dict]] = {}
    times: dict[str, float] = {}
    if "exact" in peers:
        times["exact"] = _median_seconds(lambda: solve_mckp(values, costs, b_tensor), repeats, dev)
        checks["exact"] = ("feasible at every budget", {})
    if "stream" in peers:
        times["stream"] = _median_seconds(lambda: stream_pass(values, costs), repeats, dev)
        checks["stream"] = ("-", {})
    # the slow peers: the checked run is the timed run (once; they take seconds to minutes)
    if "torch-bisect" in peers and (bisect_max_users is None or users <= bisect_max_users):
        torch_bisection(values[:1000], costs[:1000], b_list[0] * min(1.0, 1000 / users))  # warm-up
        got, times["torch-bisect"] = timed(lambda: [torch_bisection(values, costs, b)[1] for b in b_list])
        if any(g > e + tol for g, e in zip(got, exact_bound)):
            raise RuntimeError("bidfcl bench: the torch bisection exceeds the exact dual bound")
        checks["torch-bisect"] = (
            "value <= exact bound",
            {"value_gap_vs_exact": max(e - g for e, g in zip(exact_value, got))},
        )
    if "numpy-bisect" in peers and (bisect_max_users is None or users <= bisect_max_users):
        v_np, c_np = values.cpu().numpy(), costs.cpu().numpy()
        got, times["numpy-bisect"] = timed(lambda: [numpy_bisection(v_np, c_np, b)[1] for b in b_list])
        if any(g > e + tol for g, e in zip(got, exact_bound)):
            raise RuntimeError("bidfcl bench: the numpy bisection exceeds the exact dual bound")
        checks["numpy-bisect"] = (
            "value <= exact bound",
            {"value_gap_vs_exact": max(e - g for e, g in zip(exact_value, got))},
        )
    if "highs" in peers and users <= highs_max_users:
        try:
            import scipy  # noqa: F401, PLC0415

            have_scipy = True
        except ImportError:
            have_scipy = False
        if have_scipy:
            v_np, c_np = values.cpu().double().numpy(), costs.cpu().double().numpy()
            lp, times["highs"] = timed(lambda: [highs_lp_relaxation(v_np, c_np, b) for b in b_list])
            if any(not (v - tol <= l_ <= u + tol) for l_, v, u in zip(lp, exact_value, exact_bound)):
                raise RuntimeError("bidfcl bench: the HiGHS LP value is outside [exact value, exact bound]")
            checks["highs"] = ("exact value <= LP <= exact bound", {})
    slow = {"torch-bisect", "numpy-bisect", "highs"}
    base = times.get("exact", math.nan)
    rows = []
    for name, t in times.items():
        passes = budgets if name in slow else 1
        rows.append(
            BenchRow(
                users,
                options,
                budgets,
                str(dtype).replace("torch.", ""),
                str(dev),
                threads,
                name,
                t,
                users * budgets / t,
                bytes_per_pass * passes / t / 1e9,
                t / base,
                *checks[name],
            )
        )
    return rows


def format_rows(rows: list[BenchRow]) -> str:
    """A plain-text table: one line per implementation, grouped by problem."""
    out = []
    key = None
    for r in rows:
        k = (r.users, r.options, r.budgets, r.dtype, r.device, r.threads)
        if k != key:
            key = k
            out.append(
                f"N = {r.users:,}, M = {r.options}, K = {r.budgets} budget(s), {r.dtype}, {r.device}, "
                f"{r.threads} thread(s)"
            )
            out.append(f"  {'impl':<13} {'time':>11} {'users/s':>10} {'GB/s':>7} {'vs exact':>15}  checked")
        vs = (
            "1"
            if r.impl == "exact"
            else (f"{r.vs_exact:.1f}x slower" if r.vs_exact >= 1 else f"{1 / r.vs_exact:.1f}x faster")
        )
        t = f"{r.seconds * 1e3:.2f} ms" if r.seconds < 10 else f"{r.seconds:.1f} s"
        out.append(f"  {r.impl:<13} {t:>11} {r.users_per_s:>10.3g} {r.gb_per_s:>7.2f} {vs:>15}  {r.check}")
    return "\n".join(out)


def bench_budget_batch(
    users: int,
    options: int,
    budgets: int = 16,
    *,
    dtype: torch.dtype = torch.float32,
    budget_range: tuple[float, float] = (0.1, 0.9),
    repeats: int = 5,
    seed: int = 0,
) -> dict:
    """K budgets in one exact call against K single-budget calls on the same problem (CPU).

    The budgets are :func:`budgets_between` ``budget_range``; a narrow range (e.g. ``(0.29, 0.31)``)
    lets the solve settle most users once for all K (one bracket spanning every lam*), a wide one
    needs every user's hull. The answers are checked first (same lam and choices). Returns the median
    seconds of both (``one_call``, ``single_calls``) and their ratio ``speedup``.
    """
    values, costs = random_allocation_problem(users, options, seed, dtype)
    b_list = budgets_between(costs, budgets, *budget_range)
    b_tensor = torch.tensor(b_list, dtype=torch.float64)
    many = solve_mckp(values, costs, b_tensor)
    for k, b in enumerate(b_list):
        one = solve_mckp(values, costs, b)
        if not (torch.equal(one.choice, many.choice[k]) and float(one.lam) == float(many.lam[k])):
            raise RuntimeError(f"bidfcl bench: budget {k} of the batch differs from its single call")
    one_call = _median_seconds(lambda: solve_mckp(values, costs, b_tensor), repeats, torch.device("cpu"))
    single = _median_seconds(lambda: [solve_mckp(values, costs, b) for b in b_list], repeats, torch.device("cpu"))
    return {
        "users": users,
        "options": options,
        "budgets": budgets,
        "dtype": str(dtype).replace("torch.", ""),
        "budget_range": list(budget_range),
        "threads": torch.get_num_threads(),
        "one_call": one_call,
        "single_calls": single,
        "speedup": single / one_call,
    }
