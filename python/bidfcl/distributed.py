"""Exact budget allocation over rows sharded across ``torch.distributed`` ranks.

Each rank passes its own rows (a contiguous shard of the population: rank 0's rows first, then
rank 1's, ...). The result is the one :func:`bidfcl.solve_mckp` / :func:`bidfcl.solve_mckp_rct`
would give on the concatenation of all ranks' rows in rank order:

* global on every rank: ``lam`` (bit for bit), ``spend``, ``value``, ``dual_bound``, ``feasible``
  (float64 totals over all ranks, equal to the single-process ones up to summation order);
* per rank: ``choice`` holds this rank's rows only (``[K, n_rank]``), equal to the matching slice
  of the single-process choice, including which users get upgraded when the budget falls inside a
  tie at lam* (ties in breakpoint are broken by global row index, i.e. by rank, then local row).

The cut (lam* and the first step not taken) is found by the exact sharded selection of
:mod:`bidfcl._sharded`: a few rounds of all-reduced histograms over breakpoint bins plus one
all-gather of the few candidate steps, so communication is ``O(P * (bins + candidates))``, never
``O(N)``. The local work is two compiled ops: ``mckp_events`` (hull steps) and
``apply_mckp_cut`` (choices under a cut).

Inputs are checked on every rank and the verdict is agreed with one all-gather of a small header
before any other collective, so bad input (mismatched option counts or dtypes, different budgets,
bad values on one rank, an RCT arm empty on every rank) raises :class:`DistributedInputError` on
EVERY rank, naming the rank and the problem, instead of leaving the others waiting. An empty shard
(no rows on this rank) is allowed.

When ``torch.distributed`` is not initialised the functions are :func:`bidfcl.solve_mckp` and
:func:`bidfcl.solve_mckp_rct`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from . import _reference, solver
from ._constants import MAX_OPTIONS
from ._ops import EXTENSION_LOADED, ops
from ._sharded import INT64_MAX, Comm, Segment, bp_keys, select_cuts
from .solver import MckpSolution, RctSolution

__all__ = ["DistributedInputError", "solve_mckp", "solve_mckp_rct", "last_stats"]

_F64 = torch.float64
_I64 = torch.int64

#: histogram bins per round and the most candidate steps gathered at once (both global)
NUM_BINS = 4096
CANDIDATE_CAP = 4096

_DTYPES = {torch.float32: 1, torch.float64: 2}
_LAST_STATS: dict = {}


class DistributedInputError(ValueError):
    """Bad or inconsistent input on one or more ranks; raised on every rank of the group."""


def last_stats() -> dict:
    """Communication of the last sharded solve on this rank: ``bytes`` (payload of every
    collective as this rank sees it: the tensor of an all-reduce, the gathered result of an
    all-gather), ``collectives`` and ``rounds`` (selection rounds)."""
    return dict(_LAST_STATS)


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


# --------------------------------------------------------------------------------------------------
# local checks (the messages of the single-process ops, without their N >= 1 rule)
# --------------------------------------------------------------------------------------------------


def _check_problem(values, costs) -> str | None:
    for name, t in (("values", values), ("costs", costs)):
        if not isinstance(t, torch.Tensor):
            return f"{name} must be a torch.Tensor, got {type(t).__name__}"
        if t.dtype not in _DTYPES:
            return f"{name} must be float32 or float64, got {t.dtype}"
        if t.dim() != 2:
            return f"{name} must be 2-D [N individuals, M options], got shape {list(t.shape)}"
    if values.dtype != costs.dtype:
        return f"values and costs must have the same dtype, got {values.dtype} and {costs.dtype}"
    if values.shape != costs.shape:
        return f"values and costs must have the same shape, got {list(values.shape)} and {list(costs.shape)}"
    if values.device != costs.device:
        return f"values and costs must be on the same device, got {values.device} and {costs.device}"
    m = values.shape[1]
    if not 1 <= m <= MAX_OPTIONS:
        return f"values must have 1 to {MAX_OPTIONS} options (columns), got M = {m}"
    if values.numel():  # one pass each when all is well (aminmax carries NaN): the search below only on failure
        vmin, vmax = torch.aminmax(values)
        cmin, cmax = torch.aminmax(costs)
        if bool(torch.isfinite(vmin) & torch.isfinite(vmax) & torch.isfinite(cmax) & (cmin >= 0)):
            return None
    for name, t, bad in (
        ("values", values, ~torch.isfinite(values)),
        ("costs", costs, ~torch.isfinite(costs)),
        ("costs", costs, costs < 0),
    ):
        if bool(bad.any()):
            pos = torch.nonzero(bad)[0].tolist()
            what = "finite" if name == "values" or bool(~torch.isfinite(t[tuple(pos)])) else ">= 0"
            return f"{name} must be {what}, got {t[tuple(pos)].item():g} at local row {pos[0]}, option {pos[1]}"
    return None


def _check_budgets(budget, like: torch.Tensor):
    """(budget limits float64 [K]: the budgets with the solver's slack, which the selection compares
    spends against; scalar?; error message or None)."""
    try:
        b, scalar = solver._budgets(budget, like)
    except TypeError as exc:
        return None, False, str(exc).removeprefix("bidfcl: ")
    b = _reference.budget_limit(b)
    if b.dim() != 1 or b.shape[0] < 1:
        return None, False, f"budget must be a number or a 1-D [K >= 1] tensor, got shape {list(b.shape)}"
    bad = ~torch.isfinite(b) | (b < 0)
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0])
        return None, False, f"budgets must be finite and >= 0, got {float(b[k]):g} at index {k}"
    return b.cpu(), scalar, None


def _hash(t: torch.Tensor | None) -> int:
    """A position-sensitive checksum of a float tensor's bits (equal tensors, equal checksums)."""
    if t is None or t.numel() == 0:
        return 0
    bits = t.detach().to("cpu", _F64).contiguous().view(_I64)
    mult = torch.arange(t.numel(), dtype=_I64) * 2 + 0x9E3779B1
    return int((bits * mult).sum())


# --------------------------------------------------------------------------------------------------
# the agreed header: one all-gather before anything else
# --------------------------------------------------------------------------------------------------

_H_ERR, _H_M, _H_DTYPE, _H_K, _H_N, _H_BHASH, _H_PKIND, _H_PHASH, _H_SCALAR = range(9)
_HEADER_LEN = 10
_ERRORS = {1: "bad values or costs", 2: "bad budget", 3: "bad treatment, cost_obs or propensity"}


def _agree(comm: Comm, header: list[int], message: str | None) -> torch.Tensor:
    """All-gather the headers; raise on every rank if any rank reported an error."""
    rows = torch.stack(comm.all_gather(torch.tensor(header, dtype=_I64)))
    bad = [r for r in range(comm.size) if int(rows[r, _H_ERR]) != 0]
    if bad:
        parts = []
        for r in bad:
            what = message if r == comm.rank else _ERRORS[int(rows[r, _H_ERR])] + " (details in that rank's error)"
            parts.append(f"rank {r}: {what}")
        raise DistributedInputError("bidfcl.distributed: " + "; ".join(parts))
    return rows


def _require_equal(rows: torch.Tensor, col: int, what: str, show=lambda v: str(v)) -> None:
    vals = rows[:, col].tolist()
    for r, v in enumerate(vals):
        if v != vals[0]:
            raise DistributedInputError(
                f"bidfcl.distributed: {what} differ between ranks: rank 0 has {show(vals[0])}, rank {r} has {show(v)}"
            )


def _dtype_name(code: int) -> str:
    return {v: str(k) for k, v in _DTYPES.items()}.get(code, "?")


# --------------------------------------------------------------------------------------------------
# local ops (the compiled ones on CPU; the twins elsewhere)
# --------------------------------------------------------------------------------------------------


def _local_ops(values: torch.Tensor):
    return ops if (values.device.type == "cpu" or not EXTENSION_LOADED) else _reference


def _segment(values, costs, ordinal, treatment=None, weight=None) -> tuple[Segment, float]:
    if values.shape[0] == 0:
        empty = torch.zeros(0, dtype=_I64)
        return Segment(ordinal, empty, empty, torch.zeros(0, dtype=_F64)), 0.0
    bp, ids, delta, base = _local_ops(values).mckp_events(values, costs, treatment, weight)
    return Segment(ordinal, bp_keys(bp.cpu()), ids.cpu(), delta.cpu()), float(base)


def _key_range(comm: Comm, seg: Segment) -> tuple[int, int]:
    hi = int(seg.key.max()) if seg.key.numel() else -1
    lo = int(seg.key.min()) if seg.key.numel() else 2**62
    both = comm.all_reduce(torch.tensor([hi, -lo], dtype=_I64), op="max")
    return -int(both[1]), int(both[0])


#: relative widening of the bracket of local lam*s (covers rounding between the local solve and the
#: events' breakpoints), and the score margin under which a row counts as possibly tied
BRACKET_WIDEN = 1e-3
_MARGIN = {torch.float32: 1e-5, torch.float64: 1e-11}


def _bracketed_cuts(comm: Comm, values, costs, budgets: torch.Tensor, n_total: int, sel: dict):
    """The cuts from the hull steps of the few rows whose choice can change near lam*, or None.

    Each rank solves its own rows at its share of every budget, ``b n_rank / N`` (the fast
    single-process solve). Spend is non-increasing in lam on every rank, so the global lam* of
    each budget lies between the smallest and the largest of the ranks' lam*s: above the largest
    every rank spends at most its share, at the smallest every rank spends more. In that bracket
    (widened by ``BRACKET_WIDEN``) a row whose best option is the same at both ends, by more than
    a rounding margin, has no hull step: its choice is fixed and its spend known. Only the other
    rows' steps enter the exact selection (the fixed rows' spend joins the base); their ids are
    mapped back to the shard's rows, so the order and the tie rule are those of the whole shard.

    Returns ``(cuts, sub, best)`` (``sub``: the rows with steps, ``best``: every row's option while
    fixed), or None (the caller selects over every step) when a rank's share fits or overspends
    at every lam, or when a cut is not inside the bracket; every rank sees the same and agrees.
    """
    n, m = values.shape
    lo_hi = torch.tensor([float("-inf"), float("-inf")], dtype=_F64)
    if n:
        local = solver.solve_mckp(values, costs, (budgets * (n / n_total)).to(values.device))
        lam = local.lam.to("cpu", _F64)
        ok = bool(torch.isfinite(lam).all()) and bool((lam > 0).all())
        lo_hi = (
            torch.tensor([-float(lam.min()), float(lam.max())], dtype=_F64)
            if ok
            else torch.tensor([float("inf"), float("inf")], dtype=_F64)
        )
    both = comm.all_reduce(lo_hi, op="max")
    if not bool(torch.isfinite(both).all()) or m < 2:
        return None
    lo, hi = -float(both[0]) * (1 - BRACKET_WIDEN), float(both[1]) * (1 + BRACKET_WIDEN)
    # the margin test in the input dtype: its rounding (a few ulp) is far below the margin
    scale = values.abs().amax(1) + costs.amax(1) * hi
    tol = _MARGIN[values.dtype] * scale
    fixed, best = None, None
    for lam_end in (lo, hi):
        score = values - lam_end * costs
        top, pick = score.max(1)
        second = score.scatter_(1, pick.unsqueeze(1), float("-inf")).amax(1)
        sure = (top - second) > tol
        fixed = sure if fixed is None else fixed & sure & (pick == best)
        best = pick
    sub = torch.nonzero(~fixed).squeeze(1)
    cf = costs.gather(1, best.unsqueeze(1)).squeeze(1)
    fixed_spend = float(cf.to(_F64)[fixed].sum()) if n else 0.0
    seg, base_sub = _segment(values[sub], costs[sub], comm.rank)
    seg = seg._replace(id=sub.cpu()[seg.id // m] * m + seg.id % m)
    kmin, kmax = _key_range(comm, seg)
    base = float(comm.all_reduce(torch.tensor([base_sub + fixed_spend], dtype=_F64))[0])
    cuts = select_cuts(
        lambda: (seg,),
        comm,
        budgets.tolist(),
        base,
        kmin,
        kmax,
        monotone=True,
        nbins=NUM_BINS,
        cap=CANDIDATE_CAP,
        stats=sel,
    )
    klo = int(bp_keys(torch.tensor([lo], dtype=values.dtype))[0])
    khi = int(bp_keys(torch.tensor([hi], dtype=values.dtype))[0])
    if any(cut.kind != "cut" or not klo <= cut.key <= khi for cut in cuts):
        return None
    sel["bracketed_rows"] = int(comm.all_reduce(torch.tensor([sub.numel()], dtype=_I64))[0])
    return cuts, sub, best


def _apply_bracketed(values, costs, cuts, ordinal: int, sub: torch.Tensor, best: torch.Tensor):
    """:func:`_apply` when only the rows ``sub`` have steps in the bracket: ``apply_mckp_cut`` on them
    (the cut's row mapped to their numbering), ``best`` and its totals for the fixed rest."""
    n, m = values.shape
    k = len(cuts)
    local = [c.local(ordinal, m, values.dtype) for c in cuts]
    lam = torch.stack([x[0] for x in local]).to(values.device)
    choice = best.unsqueeze(0).expand(k, n).clone()
    fixed = torch.ones(n, dtype=torch.bool, device=values.device)
    fixed[sub] = False
    v = values.gather(1, best.unsqueeze(1)).squeeze(1)[fixed].to(_F64)
    c = costs.gather(1, best.unsqueeze(1)).squeeze(1)[fixed].to(_F64)
    spend = torch.full((k,), float(c.sum()), dtype=_F64)
    value = torch.full((k,), float(v.sum()), dtype=_F64)
    lagr = torch.stack([(v - lam[q].to(_F64) * c).sum() for q in range(k)]).cpu()
    if sub.numel():
        ind, stp = [], []
        subs = sub.cpu()
        for _, i, s_ in local:  # the cut's individual among the rows of sub (ties at lam are all there)
            if i in (0, INT64_MAX):
                ind.append(i)
                stp.append(s_)
                continue
            pos = int(torch.searchsorted(subs, torch.tensor(i)))
            inside = pos < subs.numel() and int(subs[pos]) == i
            ind.append(pos)
            stp.append(s_ if inside else 0)
        dev = values.device
        ch, sp, va, la = _local_ops(values).apply_mckp_cut(
            values[sub],
            costs[sub],
            lam,
            torch.tensor(ind, dtype=_I64, device=dev),
            torch.tensor(stp, dtype=_I64, device=dev),
        )
        choice[:, sub] = ch
        spend, value, lagr = spend + sp.cpu(), value + va.cpu(), lagr + la.cpu()
    return choice, spend, value, lagr


def _apply(values, costs, cuts, ordinal: int, k: int):
    n, m = values.shape
    if n == 0:
        z = torch.zeros(k, dtype=_F64)
        return torch.zeros((k, 0), dtype=_I64, device=values.device), z, z.clone(), z.clone()
    local = [c.local(ordinal, m, values.dtype) for c in cuts]
    lam = torch.stack([x[0] for x in local]).to(values.device)
    ind = torch.tensor([x[1] for x in local], dtype=_I64, device=values.device)
    stp = torch.tensor([x[2] for x in local], dtype=_I64, device=values.device)
    choice, spend, value, lagr = _local_ops(values).apply_mckp_cut(values, costs, lam, ind, stp)
    return choice, spend.cpu(), value.cpu(), lagr.cpu()


def _finish_stats(comm: Comm, sel: dict, stats: dict | None) -> None:
    out = {
        "bytes": comm.bytes,
        "collectives": comm.collectives,
        "rounds": sel.get("rounds", 0),
        "ranks": comm.size,
        "bracketed_rows": sel.get("bracketed_rows"),
        "requests": {k: sel.get(k, 0) for k in ("hist", "cand", "tie", "tiewalk")},
    }
    _LAST_STATS.clear()
    _LAST_STATS.update(out)
    if stats is not None:
        stats.update(out)


def _squeeze(result, scalar: bool):
    return type(result)(*(t[0] for t in result)) if scalar else result


# --------------------------------------------------------------------------------------------------
# public solvers
# --------------------------------------------------------------------------------------------------


def solve_mckp(
    values: torch.Tensor, costs: torch.Tensor, budget, group=None, *, stats: dict | None = None
) -> MckpSolution:
    """:func:`bidfcl.solve_mckp` over the union of every rank's rows (see the module docstring).

    Args:
        values, costs: this rank's ``[n_rank, M]`` rows (``n_rank`` may be 0); M and dtype equal on
            all ranks.
        budget: the TOTAL budget over all ranks' rows (a number or a ``[K]`` tensor), equal on all ranks.
        group: the process group (None: the default group).
        stats: optional dict, filled with the communication of this call (see :func:`last_stats`).

    Returns:
        :class:`bidfcl.MckpSolution` with global ``lam``/``spend``/``value``/``dual_bound``/
        ``feasible`` and this rank's ``choice``.
    """
    if not _initialised():
        return solver.solve_mckp(values, costs, budget)
    comm = Comm(group)
    message = _check_problem(values, costs)
    budgets, scalar, code = None, False, 0
    if message is not None:
        code = 1
    else:
        budgets, scalar, bmsg = _check_budgets(budget, values)
        if bmsg is not None:
            code, message = 2, bmsg
    header = [0] * _HEADER_LEN
    header[_H_ERR] = code
    if code == 0:
        header[_H_M], header[_H_DTYPE], header[_H_N] = values.shape[1], _DTYPES[values.dtype], values.shape[0]
        header[_H_K], header[_H_BHASH], header[_H_SCALAR] = budgets.shape[0], _hash(budgets), int(scalar)
    rows = _agree(comm, header, message)
    _require_equal(rows, _H_M, "option counts (M, columns of values)")
    _require_equal(rows, _H_DTYPE, "dtypes of values", _dtype_name)
    _require_equal(rows, _H_K, "budget counts (K)")
    _require_equal(
        rows, _H_BHASH, "budgets", lambda v: "another budget" if v != int(rows[0, _H_BHASH]) else "its budget"
    )
    if int(rows[:, _H_N].sum()) == 0:
        raise DistributedInputError(
            "bidfcl.distributed: no rank holds any row (N = 0 over the group): nothing to solve"
        )

    sel: dict = {}
    n_total = int(rows[:, _H_N].sum())
    bracketed = _bracketed_cuts(comm, values, costs, budgets, n_total, sel)
    if bracketed is None:  # no bracket (a shard fits or overspends at every lam), or it missed: all hull steps
        seg, base_local = _segment(values, costs, comm.rank)
        kmin, kmax = _key_range(comm, seg)
        base = float(comm.all_reduce(torch.tensor([base_local], dtype=_F64))[0])
        cuts = select_cuts(
            lambda: (seg,),
            comm,
            budgets.tolist(),
            base,
            kmin,
            kmax,
            monotone=True,
            nbins=NUM_BINS,
            cap=CANDIDATE_CAP,
            stats=sel,
        )
        choice, spend, value, lagr = _apply(values, costs, cuts, comm.rank, len(cuts))
    else:
        cuts, sub, best = bracketed
        choice, spend, value, lagr = _apply_bracketed(values, costs, cuts, comm.rank, sub, best)
    k = len(cuts)
    totals = comm.all_reduce(torch.cat([spend.to(_F64), value.to(_F64), lagr.to(_F64)]))
    spend, value, lagr = totals[:k], totals[k : 2 * k], totals[2 * k :]
    lam = torch.stack([c.lam(values.dtype) for c in cuts])
    feasible = torch.tensor([c.kind != "infeasible" for c in cuts])
    dual = torch.where(feasible, lam.to(_F64) * budgets + lagr, torch.full_like(lagr, float("-inf")))
    _finish_stats(comm, sel, stats)
    dev = values.device
    out = MckpSolution(lam.to(dev), choice, spend.to(dev), value.to(dev), dual.to(dev), feasible.to(dev))
    return _squeeze(out, scalar)


def _check_rct(values, treatment, cost_obs, propensity) -> tuple[str | None, int]:
    """Local RCT checks: (message or None, propensity kind: 0 None, 1 per-row, 2 per-arm, 3 either)."""
    n, m = values.shape
    if (
        not isinstance(treatment, torch.Tensor)
        or treatment.dtype != torch.long
        or treatment.dim() != 1
        or treatment.shape[0] != n
    ):
        got = (
            f"{treatment.dtype} of shape {list(treatment.shape)}"
            if isinstance(treatment, torch.Tensor)
            else type(treatment).__name__
        )
        return f"treatment must be an int64 tensor of shape [{n}] (one per local row), got {got}", 0
    bad = (treatment < 0) | (treatment >= m)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        return f"treatment must be in [0, M) = [0, {m}), got {int(treatment[i])} at local row {i}", 0
    if (
        not isinstance(cost_obs, torch.Tensor)
        or cost_obs.dim() != 1
        or cost_obs.shape[0] != n
        or not cost_obs.is_floating_point()
    ):
        got = f"shape {list(cost_obs.shape)}" if isinstance(cost_obs, torch.Tensor) else type(cost_obs).__name__
        return f"cost_obs must be a float tensor of shape [{n}] (one per local row), got {got}", 0
    bad = ~torch.isfinite(cost_obs)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        return f"cost_obs must be finite, got {float(cost_obs[i]):g} at local row {i}", 0
    if propensity is None:
        return None, 0
    if isinstance(propensity, (list, tuple)):
        propensity = torch.tensor(propensity, dtype=values.dtype)
    if not isinstance(propensity, torch.Tensor) or propensity.dim() != 1 or propensity.shape[0] not in (n, m):
        got = f"shape {list(propensity.shape)}" if isinstance(propensity, torch.Tensor) else type(propensity).__name__
        return f"propensity must be None, per-row [{n}] or per-arm [M={m}], got {got}", 0
    bad = ~((propensity > 0) & (propensity <= 1))
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        return f"propensity must be in (0, 1], got {float(propensity[i]):g} at index {i}", 0
    kind = 3 if n == m else (1 if propensity.shape[0] == n else 2)
    return None, kind


def solve_mckp_rct(
    values: torch.Tensor,
    costs: torch.Tensor,
    treatment: torch.Tensor,
    cost_obs: torch.Tensor,
    budget_per_capita,
    propensity=None,
    group=None,
    *,
    stats: dict | None = None,
) -> RctSolution:
    """:func:`bidfcl.solve_mckp_rct` over the union of every rank's rows (see the module docstring).

    The IPW spend estimate ``(1/N) sum_i 1[choice_i = t_i] cost_obs_i / p_{t_i}`` uses the global
    N and, with ``propensity=None``, the global arm shares ``p_t = N_t / N`` (an arm may be empty
    on some ranks; an arm empty on EVERY rank is an error). ``propensity`` is per-row (this rank's
    ``[n_rank]``) or per-arm ``[M]`` (equal on all ranks); per-row wins when ``n_rank == M`` on
    every rank. Returns :class:`bidfcl.RctSolution` with global ``lam``/``spend``/``feasible`` and
    this rank's ``choice``.
    """
    if not _initialised():
        return solver.solve_mckp_rct(values, costs, treatment, cost_obs, budget_per_capita, propensity)
    comm = Comm(group)
    message, kind, code = _check_problem(values, costs), 0, 0
    budgets, scalar = None, False
    if message is not None:
        code = 1
    else:
        message, kind = _check_rct(values, treatment, cost_obs, propensity)
        if message is not None:
            code = 3
        else:
            budgets, scalar, message = _check_budgets(budget_per_capita, values)
            code = 2 if message is not None else 0
    if isinstance(propensity, (list, tuple)):
        propensity = torch.tensor(propensity, dtype=values.dtype if code != 1 else torch.float64)
    header = [0] * _HEADER_LEN
    header[_H_ERR] = code
    if code == 0:
        n, m = values.shape
        header[_H_M], header[_H_DTYPE], header[_H_N] = m, _DTYPES[values.dtype], n
        header[_H_K], header[_H_BHASH], header[_H_SCALAR] = budgets.shape[0], _hash(budgets), int(scalar)
        header[_H_PKIND] = kind
        header[_H_PHASH] = _hash(propensity) if kind == 2 else 0
    rows = _agree(comm, header, message)
    _require_equal(rows, _H_M, "option counts (M, columns of values)")
    _require_equal(rows, _H_DTYPE, "dtypes of values", _dtype_name)
    _require_equal(rows, _H_K, "budget counts (K)")
    _require_equal(
        rows, _H_BHASH, "budgets", lambda v: "another budget" if v != int(rows[0, _H_BHASH]) else "its budget"
    )
    kinds = set(rows[:, _H_PKIND].tolist())
    names = {0: "None", 1: "per-row", 2: "per-arm", 3: "per-row or per-arm"}
    if len(kinds - {3}) > 1 or (0 in kinds and len(kinds) > 1):
        per = ", ".join(f"rank {r}: {names[int(v)]}" for r, v in enumerate(rows[:, _H_PKIND].tolist()))
        raise DistributedInputError(f"bidfcl.distributed: propensity kinds differ between ranks ({per})")
    per_arm = kinds in ({2}, {2, 3})
    if per_arm:
        _require_equal(rows, _H_PHASH, "per-arm propensities", lambda v: "other values" if v else "its values")
    n_total = int(rows[:, _H_N].sum())
    if n_total == 0:
        raise DistributedInputError(
            "bidfcl.distributed: no rank holds any row (N = 0 over the group): nothing to solve"
        )

    n, m = values.shape
    dtype, dev = values.dtype, values.device
    if propensity is None:
        counts = comm.all_reduce(torch.bincount(treatment.cpu(), minlength=m).to(_I64))
        empty = torch.nonzero(counts == 0).flatten().tolist()
        if empty:
            raise DistributedInputError(
                f"bidfcl.distributed: RCT arm(s) {empty} have no rows on any rank (arm counts {counts.tolist()} "
                f"over {comm.size} ranks): the arm shares p_t = N_t / N need every arm"
            )
        prop = (counts.to(dtype) / max(n_total, 1)).to(dev)[treatment]
    elif per_arm:
        prop = propensity.to(device=dev, dtype=dtype)[treatment]
    else:
        prop = propensity.to(device=dev, dtype=dtype)
    weight = cost_obs.to(dtype).to(_F64) / prop.to(_F64) * (1.0 / n_total)

    seg, base_local = _segment(values, costs, comm.rank, treatment, weight)
    kmin, kmax = _key_range(comm, seg)
    base = float(comm.all_reduce(torch.tensor([base_local], dtype=_F64))[0])
    sel: dict = {}
    cuts = select_cuts(
        lambda: (seg,),
        comm,
        budgets.tolist(),
        base,
        kmin,
        kmax,
        monotone=False,
        nbins=NUM_BINS,
        cap=CANDIDATE_CAP,
        stats=sel,
    )
    choice = _apply(values, costs, cuts, comm.rank, len(cuts))[0]
    lam = torch.stack([c.lam(dtype) for c in cuts])
    spend = torch.tensor([c.total for c in cuts], dtype=_F64)
    feasible = torch.tensor([c.kind != "infeasible" for c in cuts])
    _finish_stats(comm, sel, stats)
    return _squeeze(RctSolution(lam.to(dev), choice, spend.to(dev), feasible.to(dev)), scalar)
