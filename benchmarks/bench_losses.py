"""Benchmarks: decision losses (forward + backward) and AUCC, compiled op vs pure-PyTorch twin.

Run: OMP_NUM_THREADS=1 PYTHONPATH=python python -m pytest benchmarks/bench_losses.py --benchmark-only -q
(issue 12 asks for the losses on one thread: forward + backward, M in {2, 4, 8, 16}, both losses.)
Each op benchmark first checks op == twin; the twin is timed in the same run, and the summary
(benchmarks/conftest.py) prints "twin / op" per group: the op's speedup over its twin.
"""

from __future__ import annotations

import pytest
import torch

import bidfcl
from bidfcl import _reference as ref
from bidfcl.solver import arm_propensity

pytestmark = pytest.mark.skipif(not bidfcl.EXTENSION_LOADED, reason="compares the compiled ops with the twins")

LOSS_ROWS = 300_000
AUCC_ROWS = 4_190_000
CASES = [(loss, m) for m in (2, 4, 8, 16) for loss in ("ppl", "pifd")]


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


def group(loss_name, m):
    return f"{loss_name}_loss fwd+bwd N={LOSS_ROWS:.0e} M={m} float32"


@pytest.mark.parametrize("loss_name,m", CASES)
def test_loss_op(benchmark, record, loss_name, m):
    args = loss_batch(m)
    got = forward_backward(torch.ops.bidfcl, loss_name, *args)
    exp = forward_backward(ref, loss_name, *args)
    for a, b in zip(got, exp):  # correctness first (float32: the twin's own rounding)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    benchmark(forward_backward, torch.ops.bidfcl, loss_name, *args)
    record(group(loss_name, m), "op", benchmark)


@pytest.mark.parametrize("loss_name,m", CASES)
def test_loss_twin(benchmark, record, loss_name, m):
    args = loss_batch(m)
    benchmark.pedantic(forward_backward, args=(ref, loss_name, *args), rounds=5, iterations=1, warmup_rounds=1)
    record(group(loss_name, m), "twin", benchmark)


def aucc_inputs():
    g = torch.Generator().manual_seed(0)
    n = AUCC_ROWS
    return (
        torch.rand(n, 2, generator=g),
        torch.rand(n, 2, generator=g),
        torch.randint(0, 2, (n,), generator=g),
        torch.rand(n, generator=g) * 3,
        torch.rand(n, generator=g),
        200,
    )


def test_aucc_op(benchmark, record):
    args = aucc_inputs()
    got = torch.ops.bidfcl.aucc(*args)
    exp = ref.aucc(*args)
    torch.testing.assert_close(got[0], exp[0], rtol=1e-9, atol=1e-12)
    benchmark.pedantic(torch.ops.bidfcl.aucc, args=args, rounds=5, iterations=1, warmup_rounds=1)
    record(f"aucc N={AUCC_ROWS:.3g} float32", "op", benchmark)


def test_aucc_twin(benchmark, record):
    args = aucc_inputs()
    benchmark.pedantic(ref.aucc, args=args, rounds=3, iterations=1, warmup_rounds=1)
    record(f"aucc N={AUCC_ROWS:.3g} float32", "twin", benchmark)
