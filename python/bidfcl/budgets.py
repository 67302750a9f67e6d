"""Budget units: what a budget number means, and the one place where it changes unit.

A budget travels through the package in four units (:class:`BudgetUnit`):

* ``share`` -- a fraction of a reference per-capita cost ``C_ref``: the configs'
  ``train.budget_fraction(s)``, and ``train.budgets`` / ``eval.budgets`` with ``budget_unit =
  "share"``. The trainers' ``C_ref`` is the largest arm's mean observed cost on the split
  (:func:`bidfcl.train.datasets.max_arm_cost`: the per-capita spend of giving everyone the dearest
  option), so a share of 1 affords roughly everyone the dearest option.
* ``per_capita`` -- spend per row (per user): what training, evaluation and the RCT-calibrated
  solve use (:func:`bidfcl.solve_mckp_rct`, :func:`bidfcl.metrics.eom`, the oracle of synthetic
  data, ``bidfcl allocate --budget``).
* ``total`` -- spend summed over all N rows: what :func:`bidfcl.solve_mckp`,
  :func:`bidfcl.solve_allocation` and ``bidfcl allocate --total-budget`` take.
* ``range_position`` -- a point of the spend range of a problem, 0 at the total spend of its
  cheapest policy (everyone on their cheapest option) and 1 at that of its dearest policy:
  ``bidfcl solve-demo --budget-position`` (alias ``--budget-fraction``) and the benchmarks'
  budgets (:func:`bidfcl.bench.budgets_between`). Every position in ``[0, 1]`` is feasible.

The equations (:func:`convert`; each conversion uses only the quantities it needs):

    per_capita = share * C_ref
    total      = per_capita * N
    total      = lo + position * (hi - lo)        (lo, hi: cheapest and dearest policy's totals)

Conversions are computed directly from the source unit to ``per_capita`` or ``total`` with the
equation above (no detour through a third unit), so a budget given in one unit arrives in the
other with a single rounding; the other targets invert these equations.
"""

from __future__ import annotations

import enum
import math
import numbers
from typing import Optional, Sequence

import torch

from . import _validate

__all__ = ["BudgetUnit", "CONFIG_UNITS", "budget_unit", "convert", "spend_range"]


class BudgetUnit(str, enum.Enum):
    """The units a budget comes in (see the module docstring for the meaning of each)."""

    SHARE = "share"  #: fraction of a reference per-capita cost C_ref
    PER_CAPITA = "per_capita"  #: spend per row
    TOTAL = "total"  #: spend over all rows
    RANGE_POSITION = "range_position"  #: 0 = cheapest policy's total spend, 1 = dearest policy's

    def __str__(self) -> str:
        return self.value


#: the units a config's ``budget_unit`` may name (``train.budgets``, ``eval.budgets``)
CONFIG_UNITS = (BudgetUnit.SHARE.value, BudgetUnit.PER_CAPITA.value, BudgetUnit.TOTAL.value)

_PER_ROW = (BudgetUnit.SHARE, BudgetUnit.PER_CAPITA)  # units that do not scale with N
_WHOLE = (BudgetUnit.TOTAL, BudgetUnit.RANGE_POSITION)  # units of the whole problem


def budget_unit(unit) -> BudgetUnit:
    """``unit`` (a :class:`BudgetUnit` or its name) as a :class:`BudgetUnit`; InputError otherwise."""
    if isinstance(unit, BudgetUnit):
        return unit
    try:
        return BudgetUnit(unit)
    except ValueError:
        raise _validate.InputError(
            f"bidfcl: expected a budget unit in {[u.value for u in BudgetUnit]}, got {unit!r}"
        ) from None


def spend_range(costs: torch.Tensor) -> tuple[float, float]:
    """``(lo, hi)``: total spend of the cheapest and of the dearest policy of ``costs`` ``[N, M]``
    (``sum_i min_j c_ij`` and ``sum_i max_j c_ij``, summed in float64): the ends of the
    ``range_position`` unit."""
    costs = _validate.tensor(costs, "costs")
    if costs.dim() != 2 or costs.shape[1] < 1:
        raise _validate.InputError(
            f"bidfcl: costs must be 2-D [N individuals, M >= 1 options], got shape {list(costs.shape)}"
        )
    return float(costs.min(1).values.double().sum()), float(costs.max(1).values.double().sum())


def _positive(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
        raise _validate.InputError(f"bidfcl: {name} must be a finite number > 0, got {v!r}")
    return float(v)


def _rows(n, low: int) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < low:
        why = "; a total is divided by it" if low else ""
        raise _validate.InputError(
            f"bidfcl: n_rows must be an integer >= {low} (the rows a total budget is spread over{why}), got {n!r}"
        )
    return int(n)


def _range(r) -> tuple[float, float]:
    ok = (
        isinstance(r, (tuple, list))
        and len(r) == 2
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in r)
    )
    if not ok or not 0 <= r[0] <= r[1]:
        raise _validate.InputError(
            f"bidfcl: spend_range must be (lo, hi), the finite total spends of the cheapest "
            f"and the dearest policy with 0 <= lo <= hi (see bidfcl.budgets.spend_range), "
            f"got {r!r}"
        )
    return float(r[0]), float(r[1])


def _check_values(budget, unit: BudgetUnit, name: str):
    """``budget`` as a float, a list of floats or a float64 tensor, each finite and >= 0 (and <= 1
    for a range position)."""
    hi = 1.0 if unit is BudgetUnit.RANGE_POSITION else math.inf
    rng = "in [0, 1]" if unit is BudgetUnit.RANGE_POSITION else "finite and >= 0"

    def bad(what, where: str = ""):
        return _validate.InputError(f"bidfcl: {name}{where} ({unit.value}) must be {rng}, got {what}")

    if isinstance(budget, torch.Tensor):
        if budget.dtype == torch.bool or budget.is_complex():
            raise _validate.InputTypeError(f"bidfcl: {name} must be real numbers, got dtype {budget.dtype}")
        b = budget.detach().to(torch.float64)
        flat = b.reshape(-1)
        i = _validate.first_row(~(torch.isfinite(flat) & (flat >= 0) & (flat <= hi)))
        if i is not None:
            raise bad(f"{float(flat[i])!r}", f" (entry {i})" if b.dim() else "")
        return b
    if isinstance(budget, (list, tuple)):
        return [_check_values(v, unit, f"{name}[{k}]") for k, v in enumerate(budget)]
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise _validate.InputTypeError(
            f"bidfcl: {name} must be a number, a list of numbers or a tensor, got {type(budget).__name__} {budget!r}"
        )
    if not (math.isfinite(budget) and 0 <= budget <= hi):
        raise bad(repr(budget))
    return float(budget)


def _map(f, b):
    return [_map(f, v) for v in b] if isinstance(b, list) else f(b)


def convert(
    budget,
    from_unit,
    to_unit,
    *,
    reference_cost: Optional[float] = None,
    n_rows: Optional[int] = None,
    spend_range: Optional[Sequence[float]] = None,
    name: str = "budget",
):
    """``budget`` in ``from_unit`` expressed in ``to_unit`` (the equations of the module docstring).

    Args:
        budget: a number, a list of numbers or a tensor (converted elementwise, as float64); every
            value finite and >= 0, and in ``[0, 1]`` for ``range_position``.
        from_unit, to_unit: :class:`BudgetUnit` members or their names.
        reference_cost: ``C_ref`` (finite, > 0), needed when either unit is ``share``.
        n_rows: N, needed to cross between a per-row unit (share, per_capita) and a
            whole-problem unit (total, range_position): an integer >= 1 when a total is divided
            by it, >= 0 when a per-capita budget is multiplied by it.
        spend_range: ``(lo, hi)`` totals of the cheapest and dearest policy
            (:func:`spend_range`), needed when either unit is ``range_position``.
        name: how messages call the budget (e.g. ``"eval.budgets"``).

    Returns:
        a float for a number, a list of floats for a list, a float64 tensor for a tensor.

    Raises:
        InputError (a ValueError): an unknown unit, a value out of range, or a missing or bad
        ``reference_cost`` / ``n_rows`` / ``spend_range``; InputTypeError: a non-numeric budget.
    """
    src, dst = budget_unit(from_unit), budget_unit(to_unit)
    b = _check_values(budget, src, name)
    if src is dst:
        return b
    units = (src, dst)

    def need(what: str, value, check):
        if value is None:
            raise _validate.InputError(f"bidfcl: converting {name} from {src.value} to {dst.value} needs {what}")
        return check(value)

    ref = (
        need(
            "reference_cost (C_ref, the per-capita cost a share is taken of)",
            reference_cost,
            lambda v: _positive(v, "reference_cost"),
        )
        if BudgetUnit.SHARE in units
        else None
    )
    crosses = (src in _PER_ROW) != (dst in _PER_ROW)
    n = (
        need("n_rows (the rows the total is spread over)", n_rows, lambda v: _rows(v, 1 if dst in _PER_ROW else 0))
        if crosses
        else None
    )
    lo, hi = (
        need("spend_range (lo, hi) of the problem (bidfcl.budgets.spend_range)", spend_range, _range)
        if BudgetUnit.RANGE_POSITION in units
        else (None, None)
    )

    def per_capita(v):
        if src is BudgetUnit.SHARE:
            return ref * v
        if src is BudgetUnit.PER_CAPITA:
            return v
        return total(v) / n

    def total(v):
        if src is BudgetUnit.TOTAL:
            return v
        if src is BudgetUnit.RANGE_POSITION:
            return lo + v * (hi - lo)
        return per_capita(v) * n

    if dst is BudgetUnit.PER_CAPITA:
        out = per_capita
    elif dst is BudgetUnit.TOTAL:
        out = total
    elif dst is BudgetUnit.SHARE:

        def out(v):
            return v if src is BudgetUnit.SHARE else per_capita(v) / ref
    else:  # range position: (total - lo) / (hi - lo); a problem whose every policy spends the same is at 0

        def out(v):
            if src is BudgetUnit.RANGE_POSITION:
                return v
            return (total(v) - lo) / (hi - lo) if hi > lo else total(v) * 0.0

    return _map(out, b)
