"""Benchmarks: decision losses (forward + backward) and AUCC, compiled op vs pure-PyTorch twin.

Run: PYTHONPATH=python python -m pytest benchmarks/bench_losses.py --benchmark-only -q -s
Each case checks op == twin first, then times both in the same run; the ratio (twin median / op
median) is printed and stored in the benchmark's extra_info.
"""

from __future__ import annotations

import time

import pytest
import torch

import bidfcl
from bidfcl import _reference as ref
from bidfcl.solver import arm_propensity

pytestmark = pytest.mark.skipif(not bidfcl.EXTENSION_LOADED, reason="compares the compiled ops with the twins")

LOSS_ROWS = 300_000
AUCC_ROWS = 4_190_000
_medians: dict[tuple, float] = {}


def loss_batch(m: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(m)
    r = torch.randn(LOSS_ROWS, m, generator=g).to(dtype)
    c = torch.rand(LOSS_ROWS, m, generator=g).to(dtype)
    t = torch.randint(0, m, (LOSS_ROWS,), generator=g)
    rev = torch.rand(LOSS_ROWS, generator=g).to(dtype) * 3
    prop = arm_propensity(t, m, dtype)
    lam = torch.tensor([0.5], dtype=dtype)
    return r, c, t, rev, lam, prop


def forward_backward(impl, loss_name, r, c, t, rev, lam, prop):
    rg, cg = r.detach().requires_grad_(), c.detach().requires_grad_()
    if loss_name == "ppl":
        loss = impl.ppl_loss(rg, cg, t, rev, None, lam, prop, 1.0)
    else:
        loss = impl.pifd_loss(rg, cg, t, rev, None, lam, prop, None)
    loss.backward()
    return loss.detach(), rg.grad, cg.grad


def _median_seconds(fn, repeats=7):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


@pytest.mark.parametrize("loss_name", ["ppl", "pifd"])
@pytest.mark.parametrize("m", [2, 8])
def test_loss_forward_backward(benchmark, loss_name, m):
    args = loss_batch(m)
    got = forward_backward(torch.ops.bidfcl, loss_name, *args)
    exp = forward_backward(ref, loss_name, *args)
    for a, b in zip(got, exp):  # correctness first (float32: tolerance of the twin's own rounding)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    benchmark(forward_backward, torch.ops.bidfcl, loss_name, *args)
    op_s = benchmark.stats.stats.median
    twin_s = _median_seconds(lambda: forward_backward(ref, loss_name, *args))
    ratio = twin_s / op_s
    benchmark.extra_info.update(twin_median_s=twin_s, speedup_vs_twin=ratio)
    print(f"\n{loss_name}_loss fwd+bwd N={LOSS_ROWS} M={m} float32 threads={torch.get_num_threads()}: "
          f"op {op_s * 1e3:.2f} ms, twin {twin_s * 1e3:.2f} ms, speedup {ratio:.1f}x")


def test_aucc(benchmark):
    g = torch.Generator().manual_seed(0)
    n = AUCC_ROWS
    r = torch.rand(n, 2, generator=g)
    c = torch.rand(n, 2, generator=g)
    t = torch.randint(0, 2, (n,), generator=g)
    rev = torch.rand(n, generator=g) * 3
    cost = torch.rand(n, generator=g)
    got = torch.ops.bidfcl.aucc(r, c, t, rev, cost, 200)
    exp = ref.aucc(r, c, t, rev, cost, 200)
    torch.testing.assert_close(got[0], exp[0], rtol=1e-9, atol=1e-12)
    benchmark(torch.ops.bidfcl.aucc, r, c, t, rev, cost, 200)
    op_s = benchmark.stats.stats.median
    twin_s = _median_seconds(lambda: ref.aucc(r, c, t, rev, cost, 200), repeats=3)
    ratio = twin_s / op_s
    benchmark.extra_info.update(twin_median_s=twin_s, speedup_vs_twin=ratio)
    print(f"\naucc N={n} float32 threads={torch.get_num_threads()}: op {op_s * 1e3:.1f} ms, "
          f"twin {twin_s * 1e3:.1f} ms, speedup {ratio:.1f}x")
