"""One place for the Python-side input checks of the public API.

Every public function checks its arguments where they enter, before any tensor reaches torch's
own kernels (whose messages -- ``index_add_(): Expected dtype int64 for index`` -- name neither
the argument nor the row) or the compiled ops. A message says what was expected, what arrived,
and where: the argument, and the first offending row / position and its value.

Exception types: :class:`InputTypeError` (a :class:`TypeError`) for a wrong Python type or tensor
dtype, :class:`InputError` (a :class:`ValueError`) for wrong shapes and values. Both are also
RuntimeErrors, the type the compiled ops raise for the same checks. The data package passes its
own ``DataError`` (a ``ValueError``) as ``error``.

The value checks the compiled ops already make (finite values, non-negative costs, propensities
in (0, 1], treatment range of the solver and losses) are not repeated here on the hot path:
:func:`call_op` re-raises their errors as :class:`InputError` with the op's message.
"""

from __future__ import annotations

import math
import numbers
import struct
from typing import Optional

import torch

from ._constants import (
    CODE_BAD_PROPENSITY,
    CODE_BAD_TREATMENT,
    CODE_NEGATIVE_BUDGET,
    CODE_NEGATIVE_COST,
    CODE_NON_FINITE_BUDGET,
    CODE_NON_FINITE_COST,
    CODE_NON_FINITE_INPUT,
    CODE_NON_FINITE_VALUE,
    CODE_OK,
    FAMILY_DECISION,
    FAMILY_RCT,
    INPUT_NAMES,
    STATUS_CODE,
    STATUS_COL,
    STATUS_FAMILY,
    STATUS_INPUT,
    STATUS_LEN,
    STATUS_ROW,
    STATUS_VALUE,
)

__all__ = [
    "InputError",
    "InputTypeError",
    "tensor",
    "treatment",
    "finite",
    "first_row",
    "integer",
    "number",
    "call_op",
    "status_message",
    "raise_if_failed",
]


class InputError(ValueError, RuntimeError):
    """Bad input to a bidfcl function (a ValueError).

    Also a RuntimeError: the compiled ops raise RuntimeError for the same checks (torch's
    ``TORCH_CHECK``), and code written against them keeps working (numpy's ``AxisError`` is a
    ValueError and an IndexError for the same reason).
    """


class InputTypeError(TypeError, RuntimeError):
    """An argument of the wrong Python type or tensor dtype (a TypeError; a RuntimeError like the ops' checks)."""


def _where(where: str) -> str:
    return f" {where}" if where else ""


def tensor(x, name: str, where: str = "", error: Optional[type] = None) -> torch.Tensor:
    """``x`` itself if it is a torch.Tensor, else TypeError (or ``error``) naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise (error or InputTypeError)(f"bidfcl: {name}{_where(where)} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _tracing() -> bool:
    """True under torch.compile: value checks read the data, which a graph cannot branch on. The
    compiled ops repeat the range and finiteness checks on the real data when the graph runs."""
    return torch.compiler.is_compiling()


def first_row(mask: torch.Tensor) -> Optional[int]:
    """First index along dim 0 where ``mask`` holds anywhere in that row (None when nowhere, and
    always None while torch.compile traces)."""
    if mask.numel() == 0 or _tracing():
        return None
    if mask.dim() > 1:
        mask = mask.reshape(mask.shape[0], -1).any(dim=1)
    if not bool(mask.any()):
        return None
    return int(torch.nonzero(mask)[0, 0])


def _shown(v) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 2**63 else f"{v:g}"


def treatment(
    t,
    name: str = "treatment",
    *,
    n: Optional[int] = None,
    m: Optional[int] = None,
    length_of: str = "row",
    where: str = "",
    error: Optional[type] = None,
    check_labels: bool = True,
) -> torch.Tensor:
    """Check arm labels (or a policy's choices): ``t`` itself when it is valid.

    Expected: a 1-D int64 tensor (the dtype every op, loss, metric and dataset takes; float labels
    are not rounded, other integer dtypes not copied silently), of length ``n`` when given, with
    every entry in ``[0, m)`` when ``m`` is given (else ``>= 0``). Raises :class:`InputTypeError`
    for a non-tensor or another dtype and :class:`InputError` for a wrong shape or label (both
    ``error`` when given), naming ``name``, the first bad row and its value. ``check_labels=False``
    checks type, dtype and shape only (no pass over the values).
    """
    type_error, value_error = error or InputTypeError, error or InputError
    if not isinstance(t, torch.Tensor):
        raise type_error(
            f"bidfcl: {name}{_where(where)} must be a torch.Tensor of integer arm labels, got {type(t).__name__}"
        )
    if t.dtype != torch.int64:
        hint = "once the labels are whole numbers" if t.is_floating_point() else ""
        raise type_error(
            f"bidfcl: {name}{_where(where)} must be int64 (integer arm labels), got dtype "
            f"{t.dtype}; convert with .long() {hint}".rstrip()
        )
    if t.dim() != 1:
        raise value_error(
            f"bidfcl: {name}{_where(where)} must be 1-D [N] (one arm label per row), got shape {list(t.shape)}"
        )
    if n is not None and t.shape[0] != n:
        raise value_error(
            f"bidfcl: {name}{_where(where)} must have shape [{n}] (one entry per {length_of}), got {list(t.shape)}"
        )
    if not check_labels:
        return t
    bad = t < 0 if m is None else (t < 0) | (t >= m)
    i = first_row(bad)
    if i is not None:
        rng = ">= 0" if m is None else f"in [0, M) = [0, {m})"
        raise value_error(f"bidfcl: {name}{_where(where)} must be {rng}, got {int(t[i])} at row {i}")
    return t


def finite(t: torch.Tensor, name: str, where: str = "", error: Optional[type] = None) -> torch.Tensor:
    """``t`` if every entry is finite, else ``error`` (default InputError) naming the first bad position."""
    if (not t.is_floating_point() and not t.is_complex()) or _tracing():
        return t
    bad = ~torch.isfinite(t)
    if t.numel() == 0 or not bool(bad.any()):
        return t
    pos = torch.nonzero(bad)[0].tolist()
    at = f"row {pos[0]}" if t.dim() == 1 else (f"{pos}" if t.dim() > 1 else "")
    raise (error or InputError)(f"bidfcl: {name}{_where(where)} must be finite, got {t[tuple(pos)].item():g} at {at}")


def integer(v, name: str, *, lo: Optional[int] = None, hi: Optional[int] = None, why: str = "") -> int:
    """``v`` as an int if it is an integer (bool excluded) within ``[lo, hi]``; TypeError / InputError otherwise."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise InputTypeError(f"bidfcl: {name} must be an integer, got {type(v).__name__} {v!r}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else (f"<= {hi}" if lo is None else f">= {lo} and <= {hi}")
        raise InputError(f"bidfcl: {name} must be {rng}{why}, got {v}")
    return v


def number(v, name: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    """``v`` as a finite float (bool excluded); ``positive``/``nonnegative`` bound it below."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise InputTypeError(f"bidfcl: {name} must be a number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not math.isfinite(v) or (positive and v <= 0) or (nonnegative and v < 0):
        need = "finite and > 0" if positive else ("finite and >= 0" if nonnegative else "finite")
        raise InputError(f"bidfcl: {name} must be {need}, got {v!r}")
    return v


def call_op(op, *args):
    """``op(*args)``, with the compiled ops' input errors (RuntimeError "bidfcl: ...") re-raised as
    :class:`InputError` carrying the same message (still a RuntimeError for old callers)."""
    try:
        return op(*args)
    except RuntimeError as exc:
        msg = str(exc)
        if isinstance(exc, InputError) or not msg.startswith("bidfcl:"):
            raise
        raise InputError(msg) from None


# --------------------------------------------------------------------------------------------------
# lazy checks (check=False): the status record and the eager messages rebuilt from it
# --------------------------------------------------------------------------------------------------

# The layout of a status record and its codes (an int64 tensor of STATUS_LEN entries written by the
# ``validate_mckp`` / ``validate_decision`` ops on the inputs' device) are in _constants.py, the
# Python copy of cpp/core/include/bidfcl/core/status_record.h and status.h.


def _as_float64(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", int(bits)))[0]


def _c_number(v: float) -> str:
    """``v`` as C++'s ``std::ostream << double`` prints it (what the compiled ops' messages show):
    ``%g``, with the sign of a NaN (``-nan``) kept, as libstdc++ does. The twins print Python's
    ``:g`` (no sign on NaN); ``_number_text`` picks the backend's form."""
    if math.isnan(v):
        return "-nan" if math.copysign(1.0, v) < 0 else "nan"
    return f"{v:g}"


def _number_text(v: float) -> str:
    from ._ops import EXTENSION_LOADED  # import here: _ops imports nothing from this module  # noqa: PLC0415 (_ops imports _validate at load time)

    return _c_number(v) if EXTENSION_LOADED else f"{v:g}"


def status_message(record) -> Optional[str]:
    """The eager error message for a status record (a sequence or CPU tensor of STATUS_LEN ints),
    or None when it reports no error. The text is the one the eager path (check=True) raises for
    the same input: same argument name, same position, same value."""
    fields = [int(x) for x in record]
    code, row, col, value = (fields[i] for i in (STATUS_CODE, STATUS_ROW, STATUS_COL, STATUS_VALUE))
    family, which = fields[STATUS_FAMILY], fields[STATUS_INPUT]
    if code == CODE_OK:
        return None
    if code == CODE_BAD_TREATMENT:
        return f"bidfcl: treatment must be in [0, M) = [0, {col}), got {value} at row {row}"
    v = _number_text(_as_float64(value))
    if code in (CODE_NON_FINITE_BUDGET, CODE_NEGATIVE_BUDGET):
        if code == CODE_NON_FINITE_BUDGET:
            return f"bidfcl: budgets must be finite, got {v} at index {row}"
        what = "per-capita budgets" if family == FAMILY_RCT else "total budgets"
        return f"bidfcl: budgets must be >= 0 ({what}), got {v} at index {row}"
    decision = family == FAMILY_DECISION
    values_name, costs_name = ("r_hat", "c_hat") if decision else ("values", "costs")
    if code == CODE_NON_FINITE_VALUE:
        return f"bidfcl: {values_name} must be finite, got {v} at [{row}, {col}]"
    if code == CODE_NON_FINITE_COST:
        return f"bidfcl: {costs_name} must be finite, got {v} at [{row}, {col}]"
    if code == CODE_NEGATIVE_COST:
        return f"bidfcl: {costs_name} must be >= 0, got {v} at [{row}, {col}]"
    if code == CODE_BAD_PROPENSITY:
        return f"bidfcl: propensity must be in (0, 1], got {v} at row {row}"
    if code == CODE_NON_FINITE_INPUT:
        if decision:
            name = INPUT_NAMES.get(which, "input")
            where = "index" if name == "lam" else "row"
            return f"bidfcl: {name} must be finite, got {v} at {where} {row}"
        name = "cost_obs" if family == FAMILY_RCT else "input"
        return f"bidfcl: {name} must be finite, got {v} at row {row}"
    return f"bidfcl: unknown error code {code} in a status record"


def _statuses(results) -> list:
    """The status tensors held by ``results``, in order (see :func:`raise_if_failed`)."""
    found = []
    for r in results:
        if r is None:
            continue
        if isinstance(r, torch.Tensor):
            if r.dtype != torch.int64 or r.dim() != 1 or r.shape[0] != STATUS_LEN:
                raise InputError(
                    f"bidfcl: a status must be an int64 tensor of shape [{STATUS_LEN}], got dtype "
                    f"{r.dtype} and shape {list(r.shape)}"
                )
            found.append(r)
        elif hasattr(r, "status"):
            found.extend(_statuses([r.status]))
        elif isinstance(r, (list, tuple)):
            found.extend(_statuses(r))
        else:
            raise InputTypeError(
                f"bidfcl: raise_if_failed takes results of check=False calls (with a .status), "
                f"status tensors or None, got {type(r).__name__}"
            )
    return found


def raise_if_failed(*results, require_feasible: bool = False) -> None:
    """The lazy half of ``check=False``: raise the eager error of the first failed check, if any.

    ``results`` are what ``check=False`` calls returned -- an :class:`~bidfcl.MckpSolution` /
    :class:`~bidfcl.RctSolution` (its ``.status``), a :class:`~bidfcl.losses.LossWithStatus`, a bare
    status tensor -- or None (and results of check=True calls, whose ``status`` is None: they were
    checked already). They are checked in the order given, so pass them in the order the calls
    ran. All statuses are read to the host together: this is the one synchronisation the lazy path
    costs, made where the caller chooses (e.g. every few hundred steps, or after a CUDA graph
    replay). Raises :class:`InputError` with exactly the message the eager call (check=True) would
    have raised for the same input.

    ``require_feasible=True`` also raises when a solution reports an infeasible budget
    (``feasible`` false: even the cheapest policy overspends), which is a result, not an input
    error, and is otherwise left to the caller.
    """
    statuses = _statuses(results)
    if statuses:
        one_device = len({s.device for s in statuses}) == 1
        host = torch.stack(statuses).cpu() if one_device else torch.stack([s.cpu() for s in statuses])
        for row in host.tolist():
            msg = status_message(row)
            if msg is not None:
                raise InputError(msg)
    if require_feasible:
        for r in results:
            feasible = getattr(r, "feasible", None)
            if isinstance(feasible, torch.Tensor) and not bool(feasible.all()):
                k = int(torch.nonzero(~feasible.reshape(-1))[0, 0])
                raise InputError(
                    f"bidfcl: budget {k} is infeasible: even the cheapest policy of the predictions "
                    "spends more than it (feasible is False, lam is inf)"
                )
