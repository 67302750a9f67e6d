"""Propensities: the probability ``p_i`` with which row i's logged arm ``t_i`` was assigned.

Every IPW estimate in the package (the RCT-calibrated solve, the decision losses, the policy value
and EOM, the trainers) weighs row i by ``1 / p_i``. They all resolve their ``propensity`` argument
here, with :func:`row_propensity`, so the accepted forms, the messages and the numbers are the same
everywhere.

What a ``propensity`` argument may be (N rows, M arms):

* ``None`` -- a randomised trial whose propensities are the arm shares of the rows given,
  ``p_i = N_{t_i} / N`` (:func:`arm_propensity`);
* a float tensor ``[N]`` -- the probability of each row's own logged arm ("per row");
* a float tensor ``[M]`` -- the assignment probability of every arm ("per arm"), ``p_i = p[t_i]``;
  when N == M the per-row reading wins;
* a list or tuple of numbers -- the same as the 1-D tensor it spells.

Refused, with a message that says what to pass instead: a number or a 0-d tensor (one propensity
for every row is the per-arm vector ``[p] * M`` or ``torch.full((N,), p)``), a ``[N, M]`` matrix
of every arm's probability (pass the logged arm's column ``p[torch.arange(N), t]``), any other
shape or 1-D length, and non-float dtypes. Where M is known (the solver, the losses, a metric given
``n_options``) a per-arm vector must have exactly M entries: a vector of another length belongs to
another problem (e.g. a per-row vector of another split) and is not guessed at. Where M is not
known (:func:`bidfcl.metrics.policy_value` without ``n_options``) a per-arm vector defines M, must
have at most :data:`bidfcl.MAX_OPTIONS` entries, and every label must index it.

The values (finite, in ``(0, 1]``) are checked by the compiled ops (eagerly, or lazily with
``check=False``), not here: resolving a propensity needs no host read when M is known, so it runs
inside ``torch.compile`` graphs and CUDA-graph-captured training steps.

Resolve once, pass everywhere: a caller that feeds the same rows to a solve and a loss (the DFCL
and Bi-DFCL steps) calls ``p = row_propensity(batch.propensity, batch.treatment, num_options=M,
dtype=r_hat.dtype)`` once and passes ``p`` to both; a per-row tensor already in the right dtype and
on the right device passes through every later resolution unchanged (no copy, no second count).
With data-parallel rows, ``counts=`` takes the all-reduced :func:`arm_counts` of every rank.

Arithmetic: arm counts are float64 sums of ones (exact up to 2**53 rows, and the same on every
device and thread count), the shares ``N_t / N`` are divided in float64 and then rounded once to
the requested dtype (for float32 and fewer than 2**24 rows bit-identical to a float32 division).
"""

from __future__ import annotations

import numbers
from typing import Optional

import torch

from . import _validate
from ._ops import MAX_OPTIONS

__all__ = ["arm_counts", "arm_propensity", "row_propensity"]

_F64 = torch.float64


def arm_counts(treatment: torch.Tensor, num_options: int) -> torch.Tensor:
    """Rows per arm, float64 ``[M]``: ``N_j = sum_i 1[t_i = j]``.

    ``treatment`` is int64 ``[N]`` whose labels the caller has checked (or leaves to an op's lazy
    check): labels outside ``[0, M)`` are clamped into it, so they never raise an index error here.
    No host read.
    """
    return _count(_clamped(treatment, num_options), num_options)


def _clamped(treatment: torch.Tensor, num_options: int) -> torch.Tensor:
    return treatment.clamp(0, max(num_options - 1, 0))


def _count(safe: torch.Tensor, num_options: int) -> torch.Tensor:
    ones = torch.ones(1, dtype=_F64, device=safe.device).expand(safe.shape[0])
    return torch.zeros(num_options, dtype=_F64, device=safe.device).index_add(0, safe, ones)


def arm_propensity(
    treatment: torch.Tensor, num_options: int, dtype: torch.dtype, *, counts: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Per-row propensity from arm shares: ``p_i = N_{t_i} / sum_j N_j``, ``[N]`` in ``dtype``.

    ``counts``: the arm counts ``N_j`` ``[M]`` to take the shares from (e.g. those of every rank's
    rows, all-reduced); default :func:`arm_counts` of ``treatment`` itself (then the denominator is
    N). Labels outside ``[0, M)`` are clamped as in :func:`arm_counts`. An empty ``treatment``
    gives an empty result. No host read.
    """
    safe = _clamped(treatment, num_options)  # one clamped copy for the count and the lookup
    if counts is None:
        counts = _count(safe, num_options)
        total = float(max(treatment.shape[0], 1))
    else:
        counts = _validate.tensor(counts, "counts")
        if counts.shape != (num_options,):
            raise _validate.InputError(
                f"bidfcl: counts must have shape [M={num_options}] (rows per arm), got {list(counts.shape)}"
            )
        counts = counts.to(device=treatment.device, dtype=_F64)
        total = counts.sum().clamp_min(1.0)
    return (counts / total).to(dtype).index_select(0, safe)  # round the M shares once, then look them up


def _as_tensor(propensity, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A list/tuple as a tensor; a number refused with the forms that are accepted."""
    if isinstance(propensity, (list, tuple)):
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in propensity):
            bad = next(v for v in propensity if not (isinstance(v, numbers.Real) and not isinstance(v, bool)))
            raise _validate.InputTypeError(
                f"bidfcl: propensity as a list must hold numbers (probabilities), got {type(bad).__name__} {bad!r}"
            )
        return torch.tensor([float(v) for v in propensity], dtype=dtype, device=device)
    if isinstance(propensity, numbers.Number) and not isinstance(propensity, torch.Tensor):
        raise _validate.InputTypeError(
            f"bidfcl: propensity must be None, a per-row [N] or a per-arm [M] tensor of probabilities, got "
            f"{type(propensity).__name__} {propensity!r} (for one propensity p on every row pass the per-arm "
            f"tensor [p] * M or torch.full((N,), p))"
        )
    return _validate.tensor(propensity, "propensity")


def _shape_error(p: torch.Tensor, n: int, m: Optional[int]) -> _validate.InputError:
    arms = "M" if m is None else f"M={m}"
    hint = ""
    if p.dim() == 0:
        hint = " (a 0-d tensor: for one propensity p on every row pass torch.full((N,), p))"
    elif p.dim() == 2 and p.shape[0] == n:
        hint = (
            " (a [N, M] matrix of every arm's probability: pass the logged arm's column, p[torch.arange(N), treatment])"
        )
    elif p.dim() == 1 and m is None:
        hint = f" (a per-arm vector has at most bidfcl.MAX_OPTIONS = {MAX_OPTIONS} entries)"
    return _validate.InputError(
        f"bidfcl: propensity must be None, per-row [N={n}] or per-arm [{arms}], got shape {list(p.shape)}{hint}"
    )


def row_propensity(
    propensity,
    treatment: torch.Tensor,
    *,
    num_options: Optional[int] = None,
    dtype: torch.dtype = _F64,
    device=None,
    counts: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The propensity of each row's own arm, ``p_i`` ``[N]``, from any accepted form (module docstring).

    Args:
        propensity: None, a float ``[N]`` / ``[M]`` tensor, or a list of numbers.
        treatment: int64 ``[N]`` arm labels, already checked by the caller for dtype and shape
            (:func:`bidfcl._validate.treatment`); with ``num_options`` their range may be left to
            the op's (lazy) check: out-of-range labels are clamped for the lookups here.
        num_options: M when the caller knows it (then a per-arm vector must have M entries and no
            host read happens); None: M is the per-arm vector's length (each label must be below
            it: one host read) or, for ``propensity=None``, ``max(treatment) + 1``.
        dtype: dtype of the result (default float64).
        device: device of the result (default ``treatment``'s); a propensity elsewhere is copied.
        counts: for ``propensity=None``, arm counts ``[M]`` to take the shares from instead of
            ``treatment``'s own (:func:`arm_propensity`), e.g. all-reduced over data-parallel ranks.

    Returns:
        ``[N]`` tensor in ``dtype`` on ``device``; a per-row tensor already in that dtype and on
        that device is returned as it is (no copy).

    Raises:
        InputTypeError: a number, a non-tensor, a list of non-numbers, or a non-float dtype.
        InputError: a shape that is none of the accepted forms, or (M unknown) a label that does
            not index the per-arm vector.
    """
    n = treatment.shape[0]
    device = treatment.device if device is None else torch.device(device)
    if propensity is None:
        if num_options is None:
            num_options = int(counts.shape[0]) if counts is not None else (int(treatment.max()) + 1 if n else 0)
        return arm_propensity(treatment, num_options, dtype, counts=counts).to(device)
    p = _as_tensor(propensity, dtype, device)
    if not p.is_floating_point():
        raise _validate.InputTypeError(
            f"bidfcl: propensity must be a float tensor of probabilities, got dtype {p.dtype}"
        )
    if p.dim() == 1 and p.shape[0] == n:  # per row (wins when N == M)
        return p.to(device=device, dtype=dtype)
    if (
        p.dim() != 1
        or (num_options is not None and p.shape[0] != num_options)
        or (num_options is None and p.shape[0] > MAX_OPTIONS)
    ):
        raise _shape_error(p, n, num_options)
    m = p.shape[0]
    if num_options is None:  # M comes from the vector: the labels have not been checked against it
        i = _validate.first_row(treatment >= m)
        if i is not None:
            raise _validate.InputError(
                f"bidfcl: treatment must be in [0, M) = [0, {m}) for a per-arm propensity, "
                f"got {int(treatment[i])} at row {i}"
            )
    return p.to(device=device, dtype=dtype).index_select(0, _clamped(treatment.to(device), m))
