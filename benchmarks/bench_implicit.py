"""Benchmark: conjugate gradient with Hessian-vector products, compiled driver vs pure-Python loop.

The model is the paper's multi-head MLP (12 input features, 128-64-32 ReLU trunk, 2M = 10 heads)
on a batch of 10k, plus smaller models; the loss is the squared error on all heads (the shape of the
lower-level loss). Each CG solve runs exactly 50 iterations (tol = 0, damping 1, no curvature stop),
so both loops do the same Hessian-vector products and differ only in what runs between them.

Also measured: one CG iteration relative to one backward pass (``autograd.grad`` of the loss with the
forward graph already built) and relative to a forward + backward pass, and one Gauss-Newton product
``J' (d2 l / do2) J v`` (``curvature="gauss-newton"``: two reverse passes over kept graphs) relative
to one exact Hessian-vector product (double backward).

Run:  PYTHONPATH=python python -m pytest benchmarks/bench_implicit.py --benchmark-only -s -q
      (BIDFCL_BENCH_THREADS=N sets torch's intra-op threads; BIDFCL_BENCH_SIZES=paper,small picks sizes)
Quick table without pytest-benchmark:  PYTHONPATH=python python benchmarks/bench_implicit.py
"""

from __future__ import annotations

import os
import time

import pytest
import torch

import bidfcl
from bidfcl import implicit

if os.environ.get("BIDFCL_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["BIDFCL_BENCH_THREADS"]))

ITERS = 50
M = 5  # options; 2M heads (revenue + cost)
SIZES = {  # name: (trunk widths, batch)
    "paper": ([128, 64, 32], 10_000),
    "medium": ([64, 32, 16], 2_000),
    "small": ([32, 16], 500),
    "tiny": ([16], 128),
}
SELECTED = [s for s in os.environ.get("BIDFCL_BENCH_SIZES", ",".join(SIZES)).split(",") if s]
ROUNDS = {"paper": 3, "medium": 5, "small": 10, "tiny": 20}
_BEST: dict[tuple[str, str], float] = {}

needs_ext = pytest.mark.skipif(not bidfcl.EXTENSION_LOADED, reason="needs the compiled extension")


class Problem:
    """Multi-head MLP regression: loss = mean ||f(x) - y||^2 over 2M heads; CG on its Hessian."""

    def __init__(self, size: str, dtype=torch.float32, device="cpu", seed=0):
        widths, batch = SIZES[size]
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(batch, 12, generator=g, dtype=dtype).to(device)
        self.y = torch.randn(batch, 2 * M, generator=g, dtype=dtype).to(device)
        dims = [12] + widths + [2 * M]
        self.params = []
        for a, b in zip(dims[:-1], dims[1:]):
            self.params.append((torch.randn(a, b, generator=g, dtype=dtype) / a**0.5).to(device).requires_grad_())
            self.params.append(torch.zeros(b, dtype=dtype, device=device).requires_grad_())
        self.b = [torch.randn(p.shape, generator=g, dtype=dtype).to(device) for p in self.params]
        self.loss = self.forward()
        self.grads = torch.autograd.grad(self.loss, self.params, create_graph=True)

    def outputs(self, params) -> torch.Tensor:
        h = self.x
        last = len(params) - 2
        for i in range(0, len(params), 2):
            h = h @ params[i] + params[i + 1]
            if i < last:
                h = torch.relu(h)
        return h

    def gauss_newton(self):
        """The Gauss-Newton operator of this loss as the trainer builds it (one per bridge step)."""
        lower = implicit.CompositeLoss(self.outputs, lambda o, outer: ((o - self.y) ** 2).mean())
        return implicit._GaussNewton(lower, self.params, [])

    def forward(self) -> torch.Tensor:
        h = self.x
        last = len(self.params) - 2
        for i in range(0, len(self.params), 2):
            h = h @ self.params[i] + self.params[i + 1]
            if i < last:
                h = torch.relu(h)
        return ((h - self.y) ** 2).mean()

    def solve(self, backend: str):
        return implicit._cg_from_grads(self.grads, self.params, self.b, None, ITERS, 0.0, 1.0, 1, False, backend)

    def matmul_flops(self) -> dict:
        """Matmul FLOPs (torch's FlopCounterMode) of one forward, one backward and one Hessian-vector
        product: a load-independent view of the iteration/backward ratio."""
        from torch.utils.flop_counter import FlopCounterMode

        v = [torch.ones_like(p) for p in self.params]
        gn = self.gauss_newton()
        out = {}
        for name, fn in (
            ("forward", self.forward),
            ("backward", self.backward),
            ("hvp", lambda: torch.autograd.grad(self.grads, self.params, v, retain_graph=True)),
            ("gauss_newton", lambda: gn.matvec(v)),
        ):
            with FlopCounterMode(display=False) as counter:
                fn()
            out[name] = counter.get_total_flops()
        return out

    def backward(self):
        return torch.autograd.grad(self.loss, self.params, retain_graph=True)

    def forward_backward(self):
        return torch.autograd.grad(self.forward(), self.params)


_PROBLEMS: dict[str, Problem] = {}


def problem(size: str) -> Problem:
    if size not in _PROBLEMS:
        _PROBLEMS[size] = Problem(size)
    return _PROBLEMS[size]


def _report(size: str) -> None:
    got = {w: _BEST.get((size, w)) for w in ("cpp", "python", "backward", "forward_backward")}
    if got["cpp"] and got["python"]:
        print(
            f"\n[{size}] CG {ITERS} its: cpp {got['cpp'] * 1e3:.2f} ms, python {got['python'] * 1e3:.2f} ms, "
            f"python/cpp = {got['python'] / got['cpp']:.2f}x"
        )
    if got["cpp"] and got["backward"]:
        per_iter = got["cpp"] / ITERS
        line = f"[{size}] one CG iteration / one backward = {per_iter / got['backward']:.2f}"
        if got["forward_backward"]:
            line += f", / one forward+backward = {per_iter / got['forward_backward']:.2f}"
        flops = problem(size).matmul_flops()
        line += (
            f"; matmul FLOPs: hvp/backward = {flops['hvp'] / flops['backward']:.2f}, "
            f"hvp/(forward+backward) = {flops['hvp'] / (flops['forward'] + flops['backward']):.2f}"
        )
        print(line)


@needs_ext
@pytest.mark.parametrize("size", SELECTED)
def test_correctness_cpp_matches_python(size):
    prob = problem(size)
    xc, sc = prob.solve("cpp")
    xp, sp = prob.solve("python")
    assert sc.iter_num == sp.iter_num == ITERS
    for u, v in zip(xc, xp):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-6)
    assert all(bool(torch.isfinite(u).all()) for u in xc)


CASES = [(size, what) for size in SELECTED for what in ("cpp", "python", "backward", "forward_backward")]


@pytest.mark.parametrize("size,what", CASES, ids=[f"{s}-{w}" for s, w in CASES])
def test_bench(benchmark, record, size, what):
    """One timing per (size, what), run size by size so that load drift on a shared machine hits the
    four measurements of one size alike. Ratios use the minimum over rounds (load only adds time)."""
    if what == "cpp" and not bidfcl.EXTENSION_LOADED:
        pytest.skip("needs the compiled extension")
    prob = problem(size)
    benchmark.group = f"implicit-{size}"
    if what in ("cpp", "python"):
        benchmark.pedantic(prob.solve, args=(what,), rounds=ROUNDS[size], warmup_rounds=1)
        record(f"implicit-cg{ITERS}-{size}", what, benchmark)  # benchmarks/conftest.py prints python / cpp
    else:
        fn = prob.backward if what == "backward" else prob.forward_backward
        benchmark.pedantic(fn, rounds=10 * ROUNDS[size], warmup_rounds=2)
    _BEST[(size, what)] = benchmark.stats.stats.min
    if what == "forward_backward":
        _report(size)


def _timed_calls(prob, gn, v) -> dict:
    """What main() times for one problem, by name (closures over this problem's objects)."""
    return dict(
        cpp=lambda: prob.solve("cpp"),
        python=lambda: prob.solve("python"),
        backward=prob.backward,
        forward_backward=prob.forward_backward,
        hvp=lambda: torch.autograd.grad(prob.grads, prob.params, v, retain_graph=True),
        gauss_newton=lambda: gn.matvec(v),
    )


def main() -> None:
    """Interleaved min-of-N timings (robust on a shared machine: load only adds time), one line per size.

    Each round times the compiled solve, the Python solve, one backward and one forward+backward
    back to back, so a load spike hits all four; the minimum over rounds is reported.
    """
    rounds_scale = float(os.environ.get("BIDFCL_BENCH_ROUNDS_SCALE", "1"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, extension {bidfcl.EXTENSION_LOADED}")
    for size in SELECTED:
        prob = problem(size)
        gn, v = prob.gauss_newton(), [torch.ones_like(p) for p in prob.params]
        best = dict(
            cpp=float("inf"),
            python=float("inf"),
            backward=float("inf"),
            forward_backward=float("inf"),
            hvp=float("inf"),
            gauss_newton=float("inf"),
        )
        fns = _timed_calls(prob, gn, v)
        if not bidfcl.EXTENSION_LOADED:
            del fns["cpp"]
        for fn in fns.values():
            fn()  # warm up
        for _ in range(max(1, int(2 * ROUNDS[size] * rounds_scale))):
            for what, fn in fns.items():
                for _ in range(1 if what in ("cpp", "python") else 5):
                    start = time.perf_counter()
                    fn()
                    best[what] = min(best[what], time.perf_counter() - start)
        cpp, py = best["cpp"], best["python"]
        flops = prob.matmul_flops()
        it = (cpp if bidfcl.EXTENSION_LOADED else py) / ITERS
        print(
            f"{size:7s} CG{ITERS}: cpp {cpp * 1e3:9.2f} ms  python {py * 1e3:9.2f} ms  python/cpp {py / cpp:5.2f}x"
            f"  | iteration/backward {it / best['backward']:4.2f}"
            f"  iteration/(forward+backward) {it / best['forward_backward']:4.2f}"
            f"  | matmul FLOPs hvp/backward {flops['hvp'] / flops['backward']:4.2f}"
            f"  | Gauss-Newton product/hvp {best['gauss_newton'] / best['hvp']:4.2f}"
            f" (FLOPs {flops['gauss_newton'] / flops['hvp']:4.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
