"""Does the bridge's hypergradient point somewhere useful at real training states?

At the start (after the warm start), middle and end of Bi-DFCL training on a scenario, the script
measures the bridge objective the trainer follows and compares it with the trainer's gradients:

    F(phi) = L_up(theta+(phi)),   theta+(phi) = argmin_theta L_low,S(theta, phi) + mu/2 ||theta - theta_t||^2

where theta_t is the current target, S a fixed sample of ``--lower-rows`` OBS rows, mu the
trainer's damping (the proximal weight of the lower problem) and L_up the trainer's upper loss on
the RCT rows with lam* held at theta_t's value. theta+ is solved by L-BFGS in float64 to a tight
tolerance, so central finite differences of F along a direction d give <grad F, d>. The
directions span the estimators and ``--random`` random directions (orthonormalised); the cosine of
an estimator with grad F is taken inside that subspace (every estimator lies in it).

Estimators: the trainer's own bridge gradient on one 1024-row batch (its warm-started CG, its
``cg_iters``); the same estimator on all of S with 200 CG iterations; and the literal Algorithm 1
(5 Adam steps of a copy of the target, full Hessian, no damping, CG(50)).

    PYTHONPATH=python python benchmarks/bridge_gradient_check.py --scenario biased-small-rct --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from torch.func import functional_call


def build(scenario: str, seed: int, epochs: int):
    from bidfcl.train import BidfclTrainer, config_from_dict, load_run_data

    raw = {
        "data": {"scenario": scenario, "seed": seed},
        "train": {"method": "bidfcl", "epochs": epochs, "warm_start_epochs": 5, "batch_size": 1024, "seed": seed},
        "bidfcl": {"teacher_epochs": 150},
        "eval": {"select": "last"},
        "output": {"progress": "none"},
    }
    cfg = config_from_dict(raw)
    tr = BidfclTrainer(cfg, load_run_data(cfg.data))
    tr.fit()
    return tr


def to_float64(tr):
    for m in tr.modules().values():
        m.double()
    d = tr.data
    d.rct, d.obs = d.rct.to(dtype=torch.float64), d.obs.to(dtype=torch.float64)
    from bidfcl.train.datasets import factual_rows

    tr.obs_rows = factual_rows(d.obs)
    tr.begin_bilevel()
    if tr.cg_warm is not None:
        tr.cg_warm = [v.double() for v in tr.cg_warm]


def flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def split(v, like):
    out, o = [], 0
    for p in like:
        out.append(v[o : o + p.numel()].view_as(p))
        o += p.numel()
    return out


def measure(tr, lower_rows: int, n_random: int, h: float, gen: torch.Generator) -> dict:
    from bidfcl import losses
    from bidfcl.solver import solve_mckp_rct

    t, b = tr.cfg.train, tr.cfg.bidfcl
    mu = b.damping
    rct = tr.data.rct
    n_obs = len(tr.obs_rows)
    s_idx = torch.randperm(n_obs, generator=gen)[:lower_rows].sort().values
    s_rows = tr.obs_rows.subset(s_idx)
    b_idx = torch.randperm(n_obs, generator=gen)[: t.batch_size].sort().values
    b_rows = tr.obs_rows.subset(b_idx)
    target, bridge = tr.target, tr.bridge
    tps, bps = list(target.parameters()), list(bridge.parameters())
    theta_t = flat([p.detach() for p in tps])
    phi0 = flat([p.detach() for p in bps])
    with torch.no_grad():
        r, c = target(rct.x)
    lam = solve_mckp_rct(r, c.clamp_min(0), rct.treatment, rct.cost, tr.train_budgets[0], propensity=rct.propensity).lam

    def upper(v):
        r, c = functional_call(target, dict(zip(tr.t_names, split(v, tps))), (rct.x,))
        return losses.ppl_loss(r, c, rct.treatment, rct.revenue, lam, rct.propensity, tau=t.tau)

    objective = tr.lower_objective(target, s_rows, s_idx)

    def prox_solution(phi, start=None):
        v = (theta_t if start is None else start).clone().requires_grad_(True)
        opt = torch.optim.LBFGS(
            [v],
            lr=1,
            max_iter=3000,
            tolerance_grad=1e-10,
            tolerance_change=1e-15,
            history_size=50,
            line_search_fn="strong_wolfe",
        )
        ph = split(phi, bps)

        def closure():
            opt.zero_grad()
            loss = objective(split(v, tps), ph) + 0.5 * mu * ((v - theta_t) ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return v.detach()

    def F(phi, start=None):
        with torch.no_grad():
            return float(upper(prox_solution(phi, start)))

    # precision of F: the same solve from a perturbed start (finite differences need |dF| >> this)
    f0 = F(phi0)
    f0_other = F(phi0, theta_t + 1e-3 * torch.randn(len(theta_t), generator=gen, dtype=torch.float64))

    # estimators
    est = {}
    res = tr.implicit_hypergradient(target, b_rows, b_idx, rct)
    est["trainer (1024 rows, warm CG)"] = flat(res.grads)
    saved = (b.cg_iters, b.cg_warm_start)
    b.cg_iters, b.cg_warm_start = 200, False
    est["same on S, CG(200)"] = flat(tr.implicit_hypergradient(target, s_rows, s_idx, rct).grads)
    b.cg_iters, b.cg_warm_start = saved
    paper_cfg = dataclasses.replace(
        b, inner_steps=5, curvature="hessian", damping=0.0, cg_iters=50, cg_warm_start=False, gate_factual=False
    )
    tr.cfg.bidfcl, keep = paper_cfg, b
    try:
        inner = tr._inner_solution(b_rows, b_idx)
        est["literal Algorithm 1"] = flat(tr.implicit_hypergradient(inner, b_rows, b_idx, rct).grads)
    finally:
        tr.cfg.bidfcl = keep
    basis = [e / e.norm() for e in est.values() if float(e.norm()) > 0]
    basis += [torch.randn(len(phi0), generator=gen, dtype=torch.float64) for _ in range(n_random)]
    q = torch.linalg.qr(torch.stack(basis, 1)).Q
    fd = torch.tensor(
        [(F(phi0 + h * q[:, k]) - F(phi0 - h * q[:, k])) / (2 * h) for k in range(q.shape[1])], dtype=torch.float64
    )
    grad_sub = q @ fd
    out = {"F": f0, "F solve precision": abs(f0 - f0_other), "h": h, "|grad F| in subspace": float(grad_sub.norm())}
    for name, e in est.items():
        cos = float(e @ grad_sub / (e.norm() * grad_sub.norm()).clamp_min(1e-300))
        out[name] = {"cos": cos, "norm_ratio": float(e.norm() / grad_sub.norm().clamp_min(1e-300))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="biased-small-rct")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", default="0,5,10", help="states: Bi-DFCL epochs trained before the check")
    ap.add_argument("--lower-rows", type=int, default=512)
    ap.add_argument("--random", type=int, default=4)
    ap.add_argument("--h", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for e in [int(v) for v in args.epochs.split(",")]:
        t0 = time.perf_counter()
        tr = build(args.scenario, args.seed, e)
        to_float64(tr)
        res = measure(tr, args.lower_rows, args.random, args.h, torch.Generator().manual_seed(args.seed + 17 * e))
        res["epochs"] = e
        res["seconds"] = time.perf_counter() - t0
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
