"""``check=False`` on CUDA: no host synchronisation, and a training step captured in a CUDA graph.

Runs only where a GPU exists (``@pytest.mark.cuda``):

* ``check=False`` gives the numbers of ``check=True`` on the device (bit for bit: the worst-case
  step buffer keeps the step order and every sum's association) and the CPU's lazy messages;
* nothing in a ``check=False`` solve or loss (forward and backward) synchronises:
  ``torch.cuda.set_sync_debug_mode("error")`` turns any sync into an error;
* a whole training step (model forward, ``solve_mckp_rct`` and ``solve_mckp`` with check=False,
  ``ppl_loss``, backward, optimizer step) is captured in a ``torch.cuda.CUDAGraph``; replays give the
  parameters of the same steps run eagerly, and bad data copied into the static inputs between
  replays is reported by ``raise_if_failed`` after the replay.

``BIDFCL_CUDA_TEST_DEVICE=cpu`` runs the device-independent checks with the CPU standing in (a
self-test of this file on machines without a GPU); the sync and graph tests need CUDA itself.
"""

from __future__ import annotations

import pytest
import torch

import bidfcl
from bidfcl import losses
from conftest import CUDA_FILE_MARKS, CUDA_TEST_DEVICE, DTYPES, F64

DEV = CUDA_TEST_DEVICE

pytestmark = CUDA_FILE_MARKS

needs_real_cuda = pytest.mark.skipif(DEV != "cuda", reason="synchronisation and CUDA graphs exist only on CUDA")


def batch(n: int, m: int, dtype, seed: int, device=DEV):
    g = torch.Generator().manual_seed(seed)
    values = (torch.rand(n, m, generator=g, dtype=F64) * 3).to(dtype)
    costs = torch.rand(n, m, generator=g, dtype=F64).to(dtype)
    costs[:, 0] = 0
    treatment = torch.randint(0, m, (n,), generator=g)
    cost_obs = 0.5 * treatment.to(dtype)
    revenue = (torch.rand(n, generator=g, dtype=F64) * 5).to(dtype)
    propensity = torch.full((n,), 1.0 / m, dtype=dtype)
    return [t.to(device) for t in (values, costs, treatment, cost_obs, revenue, propensity)]


def lazy_message(*results) -> str:
    with pytest.raises(bidfcl.InputError) as info:
        bidfcl.raise_if_failed(*results)
    return str(info.value)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 2, 5, 16])
def test_check_false_is_bit_identical_on_device(dtype, m):
    values, costs, treatment, cost_obs, revenue, prop = batch(3000, m, dtype, seed=m)
    budgets = torch.tensor([0.0, 50.0, 400.0, 1e9], dtype=F64, device=DEV)
    for a, b in zip(bidfcl.solve_mckp(values, costs, budgets), bidfcl.solve_mckp(values, costs, budgets, check=False)):
        assert torch.equal(a, b)
    per_capita = budgets / 3000
    eager = bidfcl.solve_mckp_rct(values, costs, treatment, cost_obs, per_capita, prop)
    lazy = bidfcl.solve_mckp_rct(values, costs, treatment, cost_obs, per_capita, prop, check=False)
    for a, b in zip(eager, lazy):
        assert torch.equal(a, b)
    assert lazy.status.device == values.device
    lazy.check()
    if m < 2:
        return
    for check in (True, False):
        r, c = values.clone().requires_grad_(), costs.clone().requires_grad_()
        out = losses.ppl_loss(r, c, treatment, revenue, 0.7, prop, check=check)
        out = out if check else out.check()
        out.backward()
        if check:
            ref = (out.detach(), r.grad, c.grad)
        else:
            for a, b in zip(ref, (out.detach(), r.grad, c.grad)):
                assert torch.equal(a, b)


@pytest.mark.parametrize("where", ["value", "cost", "treatment", "propensity", "cost_obs", "budget", "lam"])
def test_lazy_messages_match_the_cpu(where):
    cpu = batch(500, 4, F64, seed=3, device="cpu")
    index = {
        "value": (0, (17, 2), float("nan")),
        "cost": (1, (40, 1), -1.0),
        "treatment": (2, (9,), 6),
        "propensity": (5, (33,), 0.0),
        "cost_obs": (3, (2,), float("inf")),
    }
    if where in index:
        k, pos, v = index[where]
        cpu[k][pos] = v
    budget = -1.0 if where == "budget" else 0.2
    lam = float("nan") if where == "lam" else 0.5
    dev = [t.to(DEV) for t in cpu]
    for args in (cpu, dev):
        values, costs, treatment, cost_obs, revenue, prop = args
        sol = bidfcl.solve_mckp_rct(values, costs, treatment, cost_obs, budget, prop, check=False)
        loss = losses.pifd_loss(values, costs, treatment, revenue, lam, prop, check=False)
        msg = lazy_message(sol, loss)
        if args is cpu:
            expected = msg
    assert msg == expected


@needs_real_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_check_false_does_not_synchronise(dtype):
    values, costs, treatment, cost_obs, revenue, prop = batch(20000, 8, dtype, seed=5)
    budgets = torch.tensor([100.0, 2000.0], dtype=F64, device=DEV)
    per_capita = budgets[:1] / 20000
    r, c = values.clone().requires_grad_(), costs.clone().requires_grad_()

    def step():
        sol = bidfcl.solve_mckp(values, costs, budgets, check=False)
        rct = bidfcl.solve_mckp_rct(values, costs, treatment, cost_obs, per_capita, check=False)
        ppl = losses.ppl_loss(r, c, treatment, revenue, rct.lam, prop, check=False)
        pifd = losses.pifd_loss(r, c, treatment, revenue, 0.5, check=False)  # a number: a device fill
        (ppl.loss + pifd.loss).backward()
        return sol, rct, ppl, pifd

    step()  # warm-up: the caching allocator may grow here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        results = step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    bidfcl.raise_if_failed(*results)  # the one synchronisation, where the caller chooses


class Heads(torch.nn.Module):
    """A small revenue/cost model: r_hat [N, M], c_hat [N, M] >= 0 with a free option 0."""

    def __init__(self, d: int, m: int):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2 * m))
        self.m = m

    def forward(self, x):
        out = self.body(x)
        free = torch.ones(self.m, device=x.device, dtype=x.dtype)
        free[0] = 0
        return out[:, : self.m], torch.nn.functional.softplus(out[:, self.m :]) * free


def _training_step(model, opt, x, treatment, cost_obs, revenue, per_capita, totals):
    """One step: forward, both solves without checks, PPL at the RCT lam*, backward, SGD step.
    Returns the lazily checked results (their statuses live on the device)."""
    r_hat, c_hat = model(x)
    rct = bidfcl.solve_mckp_rct(r_hat.detach(), c_hat.detach(), treatment, cost_obs, per_capita, check=False)
    sol = bidfcl.solve_mckp(r_hat.detach(), c_hat.detach(), totals, check=False)
    lam = torch.where(rct.feasible, rct.lam, torch.zeros_like(rct.lam))
    loss = losses.ppl_loss(r_hat, c_hat, treatment, revenue, lam, check=False)
    opt.zero_grad(set_to_none=False)
    (loss.loss + 0.0 * sol.spend.sum()).backward()
    opt.step()
    return rct, sol, loss


@needs_real_cuda
def test_training_step_is_captured_in_a_cuda_graph():
    torch.manual_seed(0)
    n, d, m = 4096, 8, 4
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g).to(DEV)
    treatment = torch.randint(0, m, (n,), generator=g).to(DEV)
    cost_obs = (0.5 * treatment).float()
    revenue = torch.rand(n, generator=g).to(DEV) * 5
    per_capita = torch.tensor([0.3], dtype=F64, device=DEV)
    totals = torch.tensor([500.0], dtype=F64, device=DEV)

    eager_model = Heads(d, m).to(DEV)
    graph_model = Heads(d, m).to(DEV)
    graph_model.load_state_dict(eager_model.state_dict())
    eager_opt = torch.optim.SGD(eager_model.parameters(), lr=0.05)
    graph_opt = torch.optim.SGD(graph_model.parameters(), lr=0.05)
    static = [t.clone() for t in (x, treatment, cost_obs, revenue)]

    # warm-up on a side stream (as torch.cuda.graphs asks), mirrored by eager steps
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            _training_step(graph_model, graph_opt, *static, per_capita, totals)
    torch.cuda.current_stream().wait_stream(side)
    for _ in range(3):
        _training_step(eager_model, eager_opt, x, treatment, cost_obs, revenue, per_capita, totals)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _training_step(graph_model, graph_opt, *static, per_capita, totals)
    for _ in range(4):
        graph.replay()
        _training_step(eager_model, eager_opt, x, treatment, cost_obs, revenue, per_capita, totals)
    torch.cuda.synchronize()
    bidfcl.raise_if_failed(*captured)
    assert bool(torch.isfinite(captured[0].lam).all())
    for a, b in zip(eager_model.parameters(), graph_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    # bad data copied into the static inputs: the replay does not raise, the lazy check does
    static[1][7] = m + 3
    graph.replay()
    assert lazy_message(*captured) == f"bidfcl: treatment must be in [0, M) = [0, {m}), got {m + 3} at row 7"
    static[1][7] = 0
    static[0][11, 2] = float("nan")
    graph.replay()
    with pytest.raises(bidfcl.InputError, match="must be finite"):
        bidfcl.raise_if_failed(*captured)
