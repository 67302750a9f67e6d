"""Conjugate gradient for symmetric linear systems given by a matvec (pure PyTorch).

Solves ``(A + damping I) x = b`` for a symmetric operator ``A`` known only through ``matvec(v) = A v``.
``b`` is a tensor or a list of tensors (e.g. one block per network parameter); ``matvec`` takes and
returns the same structure. With ``r_0 = b - (A + damping I) x_0`` and ``p_0 = r_0``, each iteration is

    alpha_k = r_k'r_k / p_k'(A + damping I)p_k
    x_{k+1} = x_k + alpha_k p_k,     r_{k+1} = r_k - alpha_k (A + damping I) p_k
    beta_k  = r_{k+1}'r_{k+1} / r_k'r_k,     p_{k+1} = r_{k+1} + beta_k p_k

and CG stops when ``||r_k|| <= tol ||b||`` (converged), after ``max_iter`` iterations, or, with
``stop_on_nonpositive_curvature``, when ``p_k'(A + damping I)p_k <= 0`` (the operator is not positive
definite along ``p_k``; the iterate ``x_k`` from before that step is returned, which is still a
descent-consistent, finite approximation).

This is also the twin of the compiled driver ``bidfcl._C.hessian_cg``: the same operations in the same
order on flat buffers, so both produce the same iterates. The scalars stay on the device and a stop is
folded into an "active" flag that zeroes later steps, so the host reads the flag (a device sync) only
every ``check_every`` iterations without changing the result (only the number of wasted matvecs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch

from ._constants import CG_CONVERGED, CG_MAX_ITER, CG_NONPOSITIVE_CURVATURE

__all__ = ["CGState", "CGResult", "cg", "STATUS_NAMES"]

TensorOrList = Union[torch.Tensor, Sequence[torch.Tensor]]

#: Status codes shared with the compiled driver (cpp/python/implicit.cpp, enum CgStatus of
#: cpp/core/include/bidfcl/core/constants.h).
STATUS_NAMES = {CG_MAX_ITER: "max_iter", CG_CONVERGED: "converged", CG_NONPOSITIVE_CURVATURE: "nonpositive_curvature"}


@dataclass(frozen=True)
class CGState:
    """Diagnostics of one CG solve (the jaxopt-style solver state)."""

    iter_num: int  #: CG steps applied to the iterate
    error: float  #: relative residual ||r|| / ||b|| from the CG recurrence (0 when b == 0)
    #: "converged", "max_iter", "nonpositive_curvature", or "diverged" (:func:`bidfcl.implicit.neumann`:
    #: the series terms grew, the result is not to be used)
    status: str
    num_matvec: int  #: matvecs evaluated (>= iter_num: up to check_every - 1 wasted after a stop)
    backend: str = "python"  #: "python" or "cpp"

    @property
    def converged(self) -> bool:
        return self.status == "converged"

    @property
    def nonpositive_curvature(self) -> bool:
        return self.status == "nonpositive_curvature"

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"


class CGResult(NamedTuple):
    """``solution`` has the structure of ``b`` (tensor or list); ``state`` is a :class:`CGState`."""

    solution: TensorOrList
    state: CGState


def _check_options(max_iter, tol, damping, check_every) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"bidfcl.implicit: expected an integer max_iter >= 0, got {max_iter!r}")
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not tol >= 0:
        raise ValueError(f"bidfcl.implicit: expected tol >= 0, got {tol!r}")
    if (
        not isinstance(damping, (int, float))
        or isinstance(damping, bool)
        or not (math.isfinite(damping) and damping >= 0)
    ):
        raise ValueError(f"bidfcl.implicit: expected a finite damping >= 0, got {damping!r}")
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"bidfcl.implicit: expected an integer check_every >= 1, got {check_every!r}")


def _default_check_every(device: torch.device) -> int:
    # On the CPU reading the flag is free; on an accelerator each read waits for the queue to drain.
    return 1 if device.type == "cpu" else 10


def _as_list(b: TensorOrList, name: str) -> tuple[list[torch.Tensor], bool]:
    """The blocks of ``b`` as a list, and whether ``b`` was a single tensor."""
    if isinstance(b, torch.Tensor):
        return [b], True
    if not isinstance(b, (list, tuple)):
        raise TypeError(f"bidfcl.implicit: expected {name} as a tensor or a list of tensors, got {type(b).__name__}")
    blocks = list(b)
    if not blocks:
        raise ValueError(f"bidfcl.implicit: expected {name} to hold at least one tensor, got an empty list")
    for i, t in enumerate(blocks):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"bidfcl.implicit: expected {name}[{i}] to be a tensor, got {type(t).__name__}")
    return blocks, False


def _check_blocks(blocks: list[torch.Tensor], name: str) -> None:
    dtype, device = blocks[0].dtype, blocks[0].device
    if not dtype.is_floating_point:
        raise TypeError(f"bidfcl.implicit: expected floating-point {name}, got {dtype}")
    for i, t in enumerate(blocks):
        if t.dtype != dtype or t.device != device:
            raise TypeError(
                f"bidfcl.implicit: expected every block of {name} as {dtype} on {device}, got {name}[{i}] as "
                f"{t.dtype} on {t.device}"
            )


def _flatten(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in blocks])


def _views(flat: torch.Tensor, shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
    views, offset = [], 0
    for shape in shapes:
        n = math.prod(shape)
        views.append(flat.narrow(0, offset, n).view(shape))
        offset += n
    return views


def _run_flat(
    matvec_into: Callable[[list[torch.Tensor], torch.Tensor], None],
    b_blocks: list[torch.Tensor],
    x0_blocks: Optional[list[torch.Tensor]],
    max_iter: int,
    tol: float,
    damping: float,
    check_every: int,
    stop_on_nonpositive_curvature: bool,
) -> tuple[list[torch.Tensor], CGState]:
    """The CG loop on flat buffers; ``matvec_into(p_views, out)`` writes ``A p`` into the flat ``out``.

    Mirrors ``conjugate_gradient`` in cpp/python/implicit.cpp operation for operation.
    """
    shapes = [t.shape for t in b_blocks]
    with torch.no_grad():
        b = _flatten(b_blocks)
        x = _flatten(x0_blocks) if x0_blocks is not None else torch.zeros_like(b)
        hp = torch.empty_like(b)
        matvecs = 0
        if x0_blocks is not None:
            matvec_into(_views(x, shapes), hp)
            if damping != 0.0:
                hp.add_(x, alpha=damping)
            r = b - hp
            matvecs += 1
        else:
            r = b.clone()
        p = r.clone()
        p_views = _views(p, shapes)

        rs = torch.dot(r, r)
        threshold = torch.dot(b, b) * (tol * tol)
        active = rs > threshold
        status = torch.zeros((), dtype=torch.long, device=b.device)
        iterations = torch.zeros((), dtype=torch.long, device=b.device)
        zero = torch.zeros((), dtype=b.dtype, device=b.device)
        curvature_code = torch.full((), 2, dtype=torch.long, device=b.device)

        for k in range(max_iter):
            if k % check_every == 0 and not bool(active):
                break
            matvec_into(p_views, hp)
            if damping != 0.0:
                hp.add_(p, alpha=damping)
            matvecs += 1
            curvature = torch.dot(p, hp)
            if stop_on_nonpositive_curvature:
                bad = torch.logical_and(active, torch.logical_not(curvature > 0))  # NaN counts as bad
                status = torch.where(bad, curvature_code, status)
                active = torch.logical_and(active, torch.logical_not(bad))
            alpha = torch.where(active, rs / curvature, zero)
            x.addcmul_(p, alpha)
            r.addcmul_(hp, alpha, value=-1)
            iterations.add_(active)
            rs_next = torch.dot(r, r)
            beta = torch.where(active, rs_next / rs, zero)
            active = torch.logical_and(active, rs_next > threshold)
            p.mul_(beta).add_(r)
            rs = rs_next

        converged = bool(rs <= threshold)
        code = int(status)
        if code == 0 and converged:
            code = 1
        bb = float(torch.dot(b, b))
        error = math.sqrt(float(rs) / bb) if bb > 0.0 else 0.0
        state = CGState(
            iter_num=int(iterations), error=error, status=STATUS_NAMES[code], num_matvec=matvecs, backend="python"
        )
        return _views(x, shapes), state


def cg(
    matvec: Callable[[TensorOrList], TensorOrList],
    b: TensorOrList,
    max_iter: int = 50,
    tol: float = 1e-6,
    damping: float = 0.0,
    x0: Optional[TensorOrList] = None,
    check_every: Optional[int] = None,
    stop_on_nonpositive_curvature: bool = True,
) -> CGResult:
    """Solve ``(A + damping I) x = b`` by conjugate gradient, ``A`` given by ``matvec(v) = A v``.

    ``b`` (and ``x0``) is a tensor or a list of tensors; ``matvec`` receives and must return the same
    structure (a list of tensors shaped like the blocks of ``b``; ``None`` entries count as zero).
    All blocks share one dtype and device. ``A`` must be symmetric; CG converges when it is positive
    definite (with damping). ``check_every`` (default 1 on CPU, 10 elsewhere) is how many iterations
    pass between host reads of the stop flag. Returns ``CGResult(solution, state)`` with ``state``
    a :class:`CGState` (``iter_num``, ``error`` = ||r|| / ||b||, ``status``).
    """
    b_blocks, single = _as_list(b, "b")
    _check_blocks(b_blocks, "b")
    x0_blocks = None
    if x0 is not None:
        x0_blocks, _ = _as_list(x0, "x0")
        if len(x0_blocks) != len(b_blocks) or any(
            u.shape != v.shape or u.dtype != v.dtype or u.device != v.device for u, v in zip(x0_blocks, b_blocks)
        ):
            raise ValueError("bidfcl.implicit: expected x0 with the structure, shapes, dtype and device of b")
    if check_every is None:
        check_every = _default_check_every(b_blocks[0].device)
    _check_options(max_iter, tol, damping, check_every)
    if not callable(matvec):
        raise TypeError(f"bidfcl.implicit: expected a callable matvec, got {type(matvec).__name__}")
    shapes = [t.shape for t in b_blocks]

    def matvec_into(v_views: list[torch.Tensor], out: torch.Tensor) -> None:
        result = matvec(v_views[0] if single else list(v_views))
        blocks = [result] if single and isinstance(result, torch.Tensor) else result
        if not isinstance(blocks, (list, tuple)) or len(blocks) != len(shapes):
            raise ValueError(
                f"bidfcl.implicit: expected matvec to return {'a tensor' if single else f'{len(shapes)} tensors'} "
                "like b, got " + (type(result).__name__ if not isinstance(blocks, (list, tuple)) else f"{len(blocks)}")
            )
        pieces = []
        for i, (t, shape) in enumerate(zip(blocks, shapes)):
            if t is None:
                pieces.append(out.new_zeros(math.prod(shape)))
                continue
            if t.shape != shape:
                raise ValueError(
                    f"bidfcl.implicit: expected matvec output {i} of shape {tuple(shape)}, got {tuple(t.shape)}"
                )
            pieces.append(t.reshape(-1))
        torch.cat(pieces, out=out)

    x_blocks, state = _run_flat(
        matvec_into,
        b_blocks,
        x0_blocks,
        max_iter,
        float(tol),
        float(damping),
        check_every,
        stop_on_nonpositive_curvature,
    )
    return CGResult(x_blocks[0] if single else x_blocks, state)
