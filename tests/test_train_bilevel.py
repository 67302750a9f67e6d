"""bidfcl.train.bilevel: the Bi-DFCL trainer (teacher, bridge, target) and its hypergradient."""

import copy
import math

import pytest
import torch
from _train_common import TINY, cfg_of, params

from bidfcl.train import BidfclTrainer, ConfigError, TsmTrainer, config_from_dict, load_run_data, make_trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize(
    "train",
    [
        {"loss": "ppl"},
        {"loss": "pifd", "clip": 0.3},
        {"loss": "ppl", "bidfcl": {"hypergradient": "unrolled"}},
        {"loss": "ppl", "bidfcl": {"bridge_mode": "weight"}},
    ],
)
def test_bidfcl_runs_and_improves_lower_objective(data, train):
    train = dict(train)
    own = train.pop("bidfcl", {})
    cfg = cfg_of(
        {"method": "bidfcl", "epochs": 3, "warm_start_epochs": 1, **train},
        bidfcl={"teacher_epochs": 2, "cg_iters": 10, "bridge_every": 2, **own},
        eval={"select": "last"},
    )
    tr = BidfclTrainer(cfg, data)
    bridge0 = params(tr.bridge)
    res = tr.fit()
    main = [h for h in res["history"] if h["phase"].startswith("bidfcl")]
    assert len(main) == 3 and main[-1]["low"] < main[0]["low"]
    assert all("up" in h for h in main)
    assert any(not torch.equal(a, b) for a, b in zip(bridge0, params(tr.bridge)))  # the hypergradient moved phi
    assert not any(p.requires_grad for p in tr.teacher.parameters())  # frozen teacher
    assert res["evaluation"]["gain_share_mean"] > 0


def test_bidfcl_given_teacher_matches_trained_teacher(data):
    base = {"method": "bidfcl", "epochs": 1, "warm_start_epochs": 0}
    bi = {"teacher_epochs": 2, "cg_iters": 3, "bridge_every": 3}
    tsm = TsmTrainer(cfg_of({"method": "tsm", "epochs": 2}), data)
    tsm.fit()
    a = BidfclTrainer(cfg_of(base, bidfcl=bi), data)
    a.fit()
    b = BidfclTrainer(cfg_of(base, bidfcl=bi), data, teacher=tsm.model)
    b.fit()
    for x, y in zip(params(a.target), params(b.target)):
        assert torch.equal(x, y)


def test_bidfcl_needs_obs(data):
    d = copy.copy(data)
    d.obs = None
    with pytest.raises(ConfigError, match="OBS"):
        make_trainer(cfg_of({"method": "bidfcl"}), d)
    with pytest.raises(ConfigError, match="OBS"):
        make_trainer(cfg_of({"method": "tsm"}, tsm={"data": "pooled"}), d)


def test_gauss_newton_equals_hessian_for_a_linear_model(data):
    """With no hidden layer the outputs are linear in theta, so the Gauss-Newton matrix is the
    Hessian of the (squared-error) lower loss and both hypergradients agree."""
    res = {}
    for curvature in ("hessian", "gauss-newton"):
        cfg = config_from_dict(
            {
                "data": TINY,
                "model": {"hidden": []},
                "train": {
                    "method": "bidfcl",
                    "epochs": 0,
                    "warm_start_epochs": 3,
                    "batch_size": 128,
                    "lr": 3e-3,
                    "budget_fraction": 0.9,
                },
                "bidfcl": {
                    "curvature": curvature,
                    "cg_iters": 200,
                    "cg_tol": 1e-10,
                    "damping": 1e-3,
                    "teacher_epochs": 3,
                },
                "output": {"progress": "none"},
                "eval": {"select": "last"},
            }
        )
        d64 = copy.copy(data)
        d64.rct, d64.obs, d64.val = (ds.to(dtype=torch.float64) for ds in (data.rct, data.obs, data.val))
        tr = BidfclTrainer(cfg, d64)
        tr.fit()  # teacher and target warm start (a fresh model's lam* is infinite: zero upper gradient)
        tr.begin_bilevel()
        idx = torch.arange(256)
        res[curvature] = tr.implicit_hypergradient(tr.target, d64.obs.subset(idx), idx, d64.rct)
    for a, b in zip(res["hessian"].grads, res["gauss-newton"].grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
    assert any(float(g.abs().max()) > 0 for g in res["hessian"].grads)


def test_gauss_newton_mixed_term_from_jvp_equals_the_double_backward_one(data):
    """The default (Gauss-Newton) path forms the mixed term as d/dphi <dl/do, J v> through the
    bridge's gates; on the trainer's real lower objective (ReLU MLP, gates varying by cell) it
    equals grad_phi <v, grad_theta L_low> by double backward, and the products equal J' D J v
    with D = diag(2 W / N) formed densely."""
    from bidfcl import implicit
    from bidfcl.objectives import lower_targets

    cfg = config_from_dict(
        {
            "data": TINY,
            "model": {"hidden": [6, 5], "bridge_hidden": [4]},
            "train": {
                "method": "bidfcl",
                "epochs": 0,
                "warm_start_epochs": 3,
                "batch_size": 128,
                "lr": 3e-3,
                "budget_fraction": 0.9,
            },
            "bidfcl": {"teacher_epochs": 3, "cg_iters": 5},
            "output": {"progress": "none"},
            "eval": {"select": "last"},
        }
    )
    d64 = copy.copy(data)
    d64.rct, d64.obs, d64.val = (ds.to(dtype=torch.float64) for ds in (data.rct, data.obs, data.val))
    tr = BidfclTrainer(cfg, d64)
    tr.fit()
    tr.begin_bilevel()
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        tr.bridge.heads.weight.copy_(0.5 * torch.randn(tr.bridge.heads.weight.shape, generator=g, dtype=torch.float64))
    idx = torch.arange(64)
    batch = d64.obs.subset(idx)
    res = tr.implicit_hypergradient(tr.target, batch, idx, d64.rct)
    assert cfg.bidfcl.curvature == "gauss-newton" and res.state.iter_num == 5
    inner = [p.detach().clone().requires_grad_(True) for p in tr.target.parameters()]
    outer = list(tr.bridge.parameters())
    lower = tr.lower_objective(tr.target, batch, idx)
    grads_low = implicit._lower_gradients(lower, inner, outer)
    mixed = implicit._mixed_term(grads_low, res.solution, outer)

    def upper(th, ph):
        return tr._upper(*torch.func.functional_call(tr.target, dict(zip(tr.t_names, th)), (d64.rct.x,)), d64.rct)

    _, _, direct, defined = implicit._upper_gradients(upper, inner, outer)
    assert defined
    assert any(float(m.abs().max()) > 0 for m in mixed)
    for got, d, m in zip(res.grads, direct, mixed):
        torch.testing.assert_close(got, d - m, rtol=1e-9, atol=1e-12)
    # the product against the dense J' D J v
    gn = implicit._GaussNewton(lower, inner, outer)
    v = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in inner]
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    sizes = [p.numel() for p in inner]

    def outputs(theta):
        parts = list(torch.split(theta, sizes))
        return lower.outputs([t.view_as(p) for t, p in zip(parts, inner)]).reshape(-1)

    jac = torch.autograd.functional.jacobian(outputs, flat(inner).detach())
    with torch.no_grad():
        _, w = lower_targets(
            batch,
            tr.teach_r[idx],
            tr.teach_c[idx],
            *tr.bridge(batch.x),
            cfg.bidfcl.bridge_mode,
            cfg.bidfcl.gate_factual,
        )
    dense = jac.T @ ((2 * w.reshape(-1) / len(idx)) * (jac @ flat(v)))
    torch.testing.assert_close(flat(gn.matvec(v)), dense, rtol=1e-9, atol=1e-12)


def test_bridge_gradient_matches_finite_differences_of_the_bilevel_objective():
    """On a small well-posed instance (smooth target, ridge mu ||theta||^2 / 2 matched by damping mu),
    with the target at its lower solution theta*(phi) (Newton-polished), the trainer's bridge
    gradient points along the true hypergradient: central finite differences of
    L_up(theta*(phi)), the lower problem re-solved at each perturbed phi (lam* held at its value,
    as in the decision loss), give cosine >= 0.9 (measured: 1.0000)."""
    from torch.func import functional_call

    from bidfcl import losses
    from bidfcl.solver import solve_mckp_rct

    mu = 1e-2
    d = load_run_data(
        config_from_dict({"data": {"n_rct": 300, "n_obs": 192, "n_val": 200, "n_test": 200, "dtype": "float64"}}).data
    )
    cfg = config_from_dict(
        {
            "model": {"hidden": [5], "bridge_hidden": [4], "activation": "silu"},
            "train": {"method": "bidfcl", "epochs": 0, "warm_start_epochs": 40, "batch_size": 192, "lr": 1e-2},
            "bidfcl": {
                "teacher_epochs": 40,
                "damping": mu,
                "cg_iters": 400,
                "cg_tol": 1e-12,
                "rct_batch_size": 0,
                "curvature": "auto",
            },
            "eval": {"select": "last"},
            "output": {"progress": "none"},
        }
    )
    tr = BidfclTrainer(cfg, d)
    tr.fit()
    tr.begin_bilevel()
    with torch.no_grad():  # gates that differ across users and cells
        g = torch.Generator().manual_seed(0)
        tr.bridge.heads.weight.copy_(0.3 * torch.randn(tr.bridge.heads.weight.shape, generator=g, dtype=torch.float64))
    batch, idx, rct = tr.obs_rows, torch.arange(len(tr.obs_rows)), d.rct
    tps, bps = list(tr.target.parameters()), list(tr.bridge.parameters())

    def split(v, like):
        out, o = [], 0
        for p in like:
            out.append(v[o : o + p.numel()].view_as(p))
            o += p.numel()
        return out

    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    phi0 = flat([p.detach() for p in bps])
    objective = tr.lower_objective(tr.target, batch, idx)

    def low(v, phi):
        return objective(split(v, tps), split(phi, bps)) + 0.5 * mu * (v**2).sum()

    def solve_lower(v, phi):  # Newton with |eigenvalues| and backtracking, to |grad| < 1e-12
        v = v.detach().clone()
        for _ in range(60):
            grad = torch.autograd.functional.jacobian(lambda u: low(u, phi), v)
            if float(grad.norm()) < 1e-12:
                break
            e, u = torch.linalg.eigh(torch.autograd.functional.hessian(lambda u: low(u, phi), v, vectorize=True))
            step, f0, a = u @ ((u.T @ grad) / e.abs().clamp_min(1e-8)), float(low(v, phi)), 1.0
            while a > 1e-8 and float(low(v - a * step, phi)) > f0:
                a /= 2
            v = v - a * step
        return v

    vstar = solve_lower(flat([p.detach() for p in tps]), phi0)
    hess = torch.autograd.functional.hessian(lambda u: low(u, phi0), vstar, vectorize=True)
    assert float(torch.linalg.eigvalsh(hess).min()) > 0  # a strict local minimum: the IFT holds
    with torch.no_grad():
        for p, t in zip(tps, split(vstar, tps)):
            p.copy_(t)
    r, c = tr.target.predict(rct.x)
    lam = solve_mckp_rct(r, c, rct.treatment, rct.cost, tr.train_budgets[0], propensity=rct.propensity).lam

    def upper(v):
        r, c = functional_call(tr.target, dict(zip(tr.t_names, split(v, tps))), (rct.x,))
        return float(losses.ppl_loss(r, c, rct.treatment, rct.revenue, lam, rct.propensity))

    res = tr.implicit_hypergradient(tr.target, batch, idx, rct)  # curvature "auto"
    assert res.state.status == "converged"  # the exact Hessian: positive definite here
    grad = flat(res.grads)
    assert float(grad.norm()) > 0
    # a central difference along a direction d is <true hypergradient, d>; along grad/|grad| and
    # along a basis of the rest it gives the cosine without forming the whole true gradient
    h = 1e-4

    def fd(direction):
        return (upper(solve_lower(vstar, phi0 + h * direction)) - upper(solve_lower(vstar, phi0 - h * direction))) / (
            2 * h
        )

    def cosine_and_length(grad):
        """Cosine with the true hypergradient within the 7-dimensional subspace spanned by grad
        and six random directions, and <true, grad/|grad|> / |grad|."""
        unit = grad / grad.norm()
        along = fd(unit)
        gen = torch.Generator().manual_seed(1)
        rest = torch.linalg.qr(
            torch.cat([unit[:, None], torch.randn(len(phi0), 6, generator=gen, dtype=torch.float64)], 1)
        ).Q[:, 1:]
        across = torch.tensor([fd(rest[:, k]) for k in range(rest.shape[1])], dtype=torch.float64)
        return along / math.sqrt(along**2 + float((across**2).sum())), along / float(grad.norm())

    cos, length = cosine_and_length(grad)
    assert cos >= 0.9, (cos, length)
    assert abs(length - 1) < 0.1  # and the right length
    # the default curvature, Gauss-Newton, leaves out the Hessian's residual term: at a lower
    # solution it still points along the true hypergradient (measured: cosine 0.97, length ratio 0.72)
    tr.cfg.bidfcl.curvature, tr.cg_warm = "gauss-newton", None
    gn = tr.implicit_hypergradient(tr.target, batch, idx, rct)
    assert gn.state.status == "converged"
    gn_cos, gn_length = cosine_and_length(flat(gn.grads))
    print("gauss-newton: cosine", gn_cos, "length ratio", gn_length)
    assert gn_cos >= 0.9, (gn_cos, gn_length)


def test_fixed_gates_take_no_bridge_steps(data):
    cfg = cfg_of(
        {"method": "bidfcl", "epochs": 1, "warm_start_epochs": 1},
        bidfcl={"teacher_epochs": 1, "bridge_every": 1, "learn_bridge": False},
        eval={"select": "last"},
    )
    tr = BidfclTrainer(cfg, data)
    res = tr.fit()
    assert all(float(p.detach().abs().max()) == 0 for p in tr.bridge.heads.parameters())  # gates stay at 1/2
    assert "up" not in res["history"][-1]
