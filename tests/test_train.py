"""bidfcl.train: trainers end to end on tiny data, exact resume, configs, evaluation, experiments."""

import copy
import math
import importlib.util
import os

import pytest
import torch

import bidfcl
from bidfcl.train import (BidfclTrainer, ConfigError, DfclTrainer, TsmTrainer, config_from_dict, load_config,
                          load_model, load_run_data, make_trainer)
from bidfcl.train.evaluate import budget_levels, evaluate_model
from bidfcl.train.loop import factual_loss

HAVE_LOSSES = importlib.util.find_spec("bidfcl.losses") is not None
HAVE_IMPLICIT = importlib.util.find_spec("bidfcl.implicit") is not None
needs_losses = pytest.mark.skipif(not HAVE_LOSSES, reason="bidfcl.losses not in this build")
needs_bilevel = pytest.mark.skipif(not (HAVE_LOSSES and HAVE_IMPLICIT), reason="bidfcl.losses/implicit not in this build")

TINY = {"n_rct": 600, "n_obs": 1200, "n_val": 600, "n_test": 1000}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    cfg = config_from_dict({"data": TINY})
    return load_run_data(cfg.data)


def cfg_of(train: dict, **sections) -> bidfcl.train.RunConfig:
    raw = {"data": TINY, "model": {"hidden": [16, 8]}, "train": {"batch_size": 128, "lr": 3e-3, **train},
           "output": {"progress": "none"}}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return config_from_dict(raw)


def params(module) -> list:
    return [p.detach().clone() for p in module.state_dict().values()]


# ----------------------------------------------------------------------------------------- TSM
@pytest.mark.parametrize("which,rows", [("rct", 600), ("obs", 1200), ("pooled", 1800)])
def test_tsm_fits_its_rows_and_improves(data, which, rows):
    cfg = cfg_of({"method": "tsm", "data": which, "epochs": 4}, eval={"select": "last"})
    tr = TsmTrainer(cfg, data)
    assert len(tr.rows) == rows
    before = float(factual_loss(*tr.model.predict(tr.rows.x), tr.rows))
    res = tr.fit()
    after = float(factual_loss(*tr.model.predict(tr.rows.x), tr.rows))
    assert after < 0.95 * before
    ev = res["evaluation"]
    assert len(ev["eom"]) == 10 and ev["budgets"] == sorted(ev["budgets"])
    assert all(0.0 <= g <= 1.2 for g in ev["gain_share"])
    assert all(o >= v - 1e-9 for o, v, c, b in zip(ev["oracle_value"], ev["true_value"], ev["true_cost"], ev["budgets"])
               if c <= b)


def test_tsm_writes_files_and_model_loads(tmp_path, data):
    cfg = cfg_of({"method": "tsm", "epochs": 2})
    res = TsmTrainer(cfg, data, out_dir=str(tmp_path)).fit()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "history.csv", "metrics.json", "model.pt"]
    model, meta = load_model(str(tmp_path / "model.pt"))
    ev = evaluate_model(model, data.test, budget_levels(data.test, 10), truth=data.marketing, split="test")
    assert ev["eom"] == res["evaluation"]["eom"]
    assert meta["run_config"]["train"]["method"] == "tsm"
    m2, _ = load_model(str(tmp_path / "checkpoint.pt"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))


def test_model_selection_keeps_best_validation_epoch(data):
    cfg = cfg_of({"method": "tsm", "epochs": 5})
    tr = TsmTrainer(cfg, data)
    res = tr.fit()
    vals = [h["val_eom"] for h in res["history"]]
    best = res["best"]["tsm-rct"]
    assert best["metric"] == max(vals) and best["epoch"] == vals.index(max(vals)) + 1
    assert tr.validation_eom("model") == pytest.approx(best["metric"], rel=1e-12)


# --------------------------------------------------------------------------------------- resume
class Interrupt(Exception):
    pass


def _interrupted_then_resumed(make, out_dir, stop_after: int):
    tr = make(out_dir)
    phases = tr.phases
    count = {"n": 0}

    def patched():
        out = phases()
        for ph in out:
            step = ph.step

            def wrapped(batch, idx, step=step):
                if count["n"] == stop_after:
                    raise Interrupt()
                count["n"] += 1
                return step(batch, idx)
            ph.step = wrapped
        return out

    tr.phases = patched
    with pytest.raises(Interrupt):
        tr.fit()
    tr2 = make(out_dir)
    res = tr2.fit(resume=True)
    return tr2, res


def test_resume_reproduces_tsm_exactly(tmp_path, data):
    cfg = cfg_of({"method": "tsm", "epochs": 3}, output={"checkpoint_every": 2})
    full = TsmTrainer(cfg, data, out_dir=str(tmp_path / "full"))
    res_full = full.fit()
    tr2, res = _interrupted_then_resumed(lambda d: TsmTrainer(cfg, data, out_dir=d), str(tmp_path / "cut"), 7)
    for a, b in zip(params(full.model), params(tr2.model)):
        assert torch.equal(a, b)
    assert res["evaluation"]["eom"] == res_full["evaluation"]["eom"]
    assert [h["mse"] for h in res["history"]] == [h["mse"] for h in res_full["history"]]
    assert not [f for f in os.listdir(tmp_path / "cut") if f.endswith(".tmp")]


def test_resume_rejects_another_config(tmp_path, data):
    TsmTrainer(cfg_of({"method": "tsm", "epochs": 1}), data, out_dir=str(tmp_path)).fit()
    with pytest.raises(ConfigError, match="different configuration.*train.lr"):
        TsmTrainer(cfg_of({"method": "tsm", "epochs": 1, "lr": 0.1}), data, out_dir=str(tmp_path)).fit(resume=True)


@needs_bilevel
def test_resume_reproduces_bidfcl_exactly(tmp_path, data):
    cfg = cfg_of({"method": "bidfcl", "epochs": 2, "teacher_epochs": 1, "warm_start_epochs": 1, "cg_iters": 5,
                  "k": 2, "rct_batch_size": 200}, output={"checkpoint_every": 3})
    full = BidfclTrainer(cfg, data, out_dir=str(tmp_path / "full"))
    full.fit()
    nb_teacher, nb_warm = 5, 10
    tr2, _ = _interrupted_then_resumed(lambda d: BidfclTrainer(cfg, data, out_dir=d), str(tmp_path / "cut"),
                                       nb_teacher + nb_warm + 4)
    for name in ("teacher", "target", "bridge"):
        for a, b in zip(params(full.modules()[name]), params(tr2.modules()[name])):
            assert torch.equal(a, b), name


# ---------------------------------------------------------------------------------------- DFCL
@needs_losses
@pytest.mark.parametrize("loss", ["ppl", "pifd", "mer"])
def test_dfcl_improves_its_decision_loss(data, loss):
    from bidfcl.train.dfcl import decision_loss

    cfg = cfg_of({"method": "dfcl", "loss": loss, "epochs": 4, "warm_start_epochs": 3, "tau": 0.3, "lr": 3e-3},
                 eval={"select": "last"})
    tr = DfclTrainer(cfg, data)
    rows = data.rct
    phases = tr.phases()
    seen = {}
    orig_begin = phases[1].begin

    def begin():
        orig_begin()
        r, c = tr.model.predict(rows.x)
        seen["before"] = float(decision_loss(loss, r, c, rows, tr.train_budget, tau=0.3, lams=tr.lams))
    phases[1].begin = begin
    tr.phases = lambda: phases
    tr.fit()
    r, c = tr.model.predict(rows.x)
    after = float(decision_loss(loss, r, c, rows, tr.train_budget, tau=0.3, lams=tr.lams))
    assert after < seen["before"]


@needs_losses
def test_dfcl_alpha_mixes_prediction_loss(data):
    cfg = cfg_of({"method": "dfcl", "loss": "ppl", "epochs": 1, "warm_start_epochs": 0, "alpha": 0.5})
    res = DfclTrainer(cfg, data).fit()
    assert {"ppl", "mse"} <= set(res["history"][-1])


# ------------------------------------------------------------------------------------- Bi-DFCL
@needs_bilevel
@pytest.mark.parametrize("train", [
    {"loss": "ppl"},
    {"loss": "pifd", "clip": 0.3},
    {"loss": "ppl", "hypergradient": "unrolled"},
    {"loss": "ppl", "bridge_mode": "weight"},
])
def test_bidfcl_runs_and_improves_lower_objective(data, train):
    cfg = cfg_of({"method": "bidfcl", "epochs": 3, "teacher_epochs": 2, "warm_start_epochs": 1, "cg_iters": 10,
                  "k": 2, **train}, eval={"select": "last"})
    tr = BidfclTrainer(cfg, data)
    bridge0 = params(tr.bridge)
    res = tr.fit()
    main = [h for h in res["history"] if h["phase"].startswith("bidfcl")]
    assert len(main) == 3 and main[-1]["low"] < main[0]["low"]
    assert all("up" in h for h in main)
    assert any(not torch.equal(a, b) for a, b in zip(bridge0, params(tr.bridge)))  # the hypergradient moved phi
    assert not any(p.requires_grad for p in tr.teacher.parameters())  # frozen teacher
    assert res["evaluation"]["gain_share_mean"] > 0


@needs_bilevel
def test_bidfcl_given_teacher_matches_trained_teacher(data):
    base = {"method": "bidfcl", "epochs": 1, "teacher_epochs": 2, "warm_start_epochs": 0, "cg_iters": 3, "k": 3}
    tsm = TsmTrainer(cfg_of({"method": "tsm", "epochs": 2}), data)
    tsm.fit()
    a = BidfclTrainer(cfg_of(base), data)
    a.fit()
    b = BidfclTrainer(cfg_of(base), data, teacher=tsm.model)
    b.fit()
    for x, y in zip(params(a.target), params(b.target)):
        assert torch.equal(x, y)


def test_bidfcl_needs_obs(data):
    d = copy.copy(data)
    d.obs = None
    with pytest.raises(ConfigError, match="OBS"):
        make_trainer(cfg_of({"method": "bidfcl"}), d)
    with pytest.raises(ConfigError, match="OBS"):
        make_trainer(cfg_of({"method": "tsm", "data": "pooled"}), d)


# ------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("raw,match", [
    ({"trian": {}}, r"unknown section \[trian\] \(did you mean \[train\]\?\)"),
    ({"train": {"lrr": 1}}, r"unknown key 'lrr' in \[train\] \(did you mean 'lr'\?\)"),
    ({"train": {"epochs": "ten"}}, r"expected train.epochs to be an integer, got 'ten'"),
    ({"train": {"lr": -1.0}}, r"expected train.lr > 0"),
    ({"train": {"method": "gbdt"}}, r"expected train.method in \['tsm', 'dfcl', 'bidfcl'\]"),
    ({"train": {"method": "bidfcl", "loss": "mer"}}, r"expected train.loss in \['ppl', 'pifd'\] for method 'bidfcl'"),
    ({"train": {"budget_fraction": 1.5}}, r"budget_fraction in \(0, 1\]"),
    ({"model": {"hidden": [64, 0]}}, r"model.hidden to be positive integers"),
    ({"model": {"output": "relu"}}, r"model.output in"),
    ({"data": {"source": "files"}}, r"needs data.rct"),
    ({"data": {"source": "files", "rct": "/nonexistent.csv", "features": ["a"]}}, r"does not exist"),
    ({"eval": {"select": "auc"}}, r"eval.select"),
    ({"experiment": {"seeds": []}}, r"experiment.seeds"),
    ({"train": {"clip": 0}}, r"train.clip > 0"),
])
def test_bad_configs_say_what_is_wrong(raw, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


def test_make_marketing_errors_become_config_errors():
    cfg = config_from_dict({"data": {"n_features": 2}})
    with pytest.raises(ConfigError, match="n_features"):
        load_run_data(cfg.data)


def test_load_config_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[train]\nmethod = "dfcl"\nepochs = 3\nlr = 1\n[data]\nn_rct = 100\n')
    cfg = load_config(p)
    assert cfg.train.method == "dfcl" and cfg.train.epochs == 3 and cfg.train.lr == 1.0 and cfg.data.n_rct == 100
    assert cfg.model.hidden == [128, 64, 32]
    cfg2 = load_config(p, {"train.epochs": 5})
    assert cfg2.train.epochs == 5
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_files_source_reads_tables(tmp_path, data):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.csv as pacsv

    def write(ds, name):
        cols = {f"f{j}": ds.x[:, j].numpy() for j in range(ds.n_features)}
        cols.update(t=ds.treatment.numpy(), rev=ds.revenue.numpy(), cst=ds.cost.numpy())
        pacsv.write_csv(pa.table(cols), str(tmp_path / name))

    write(data.rct, "rct.csv")
    write(data.obs, "obs.csv")
    (tmp_path / "c.toml").write_text(
        '[data]\nsource = "files"\nrct = "rct.csv"\nobs = "obs.csv"\n'
        f'features = [{", ".join(repr(f"f{j}") for j in range(data.n_features))}]\n'
        'treatment = "t"\nrevenue = "rev"\ncost = "cst"\n'
        '[train]\nepochs = 1\ndata = "pooled"\n[model]\nhidden = [8]\n[output]\nprogress = "none"\n')
    cfg = load_config(tmp_path / "c.toml")
    d = load_run_data(cfg.data)
    assert len(d.rct) == 600 and len(d.obs) == 1200 and d.marketing is None and d.val is None
    res = make_trainer(cfg, d).fit()
    assert res["split"] == "rct" and "true_value" not in res["evaluation"]


# ---------------------------------------------------------------------------------- experiment
def test_experiment_table(tmp_path):
    from bidfcl.train.experiment import run_experiment

    methods = ["tsm-rct", "tsm-pooled"] + (["dfcl-ppl"] if HAVE_LOSSES else []) \
        + (["bidfcl-ppl"] if HAVE_LOSSES and HAVE_IMPLICIT else [])
    cfg = cfg_of({"epochs": 2, "teacher_epochs": 2, "warm_start_epochs": 1, "cg_iters": 5},
                 experiment={"methods": methods, "seeds": [0, 1],
                             "overrides": {"tsm-pooled": {"train.epochs": 1}}})
    logs = []
    out = run_experiment(cfg, str(tmp_path), log=logs.append)
    rows = {r["method"]: r for r in out["rows"]}
    assert set(rows) == set(methods) | {"oracle (true r, c)"} and len(logs) >= 2 * len(methods)
    assert rows["oracle (true r, c)"]["true_rel"][0] > 1.0
    assert rows["tsm-rct"]["eom_rel"][0] == pytest.approx(1.0) and rows["tsm-rct"]["true_rel"][0] == pytest.approx(1.0)
    assert all(r["seeds"] == 2 for r in rows.values())
    for f in ("results.md", "results.csv", "curves.csv", "results.json"):
        assert (tmp_path / f).exists()
    md = (tmp_path / "results.md").read_text()
    assert "| tsm-pooled |" in md
    if "bidfcl-ppl" in methods:
        assert "| bidfcl-ppl vs tsm-pooled | 2 |" in md
    assert (tmp_path / "eom_vs_budget.png").exists() == (importlib.util.find_spec("matplotlib") is not None)


def test_experiment_unknown_method():
    from bidfcl.train.experiment import run_experiment

    cfg = cfg_of({}, experiment={"methods": ["tsm-rct", "magic"], "seeds": [0]})
    with pytest.raises(ConfigError, match="unknown method 'magic'"):
        run_experiment(cfg)


def test_example_configs_load():
    root = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
    for name in ("bidfcl.toml", "tsm_pooled.toml", "experiment.toml"):
        cfg = load_config(os.path.join(root, name))
        assert cfg.train.method in ("tsm", "bidfcl")
    if not os.path.exists(os.path.join(root, "data", "rct.parquet")):
        with pytest.raises(ConfigError, match="rct.parquet.*does not exist"):
            load_config(os.path.join(root, "dfcl_files.toml"))


@pytest.mark.skipif(importlib.util.find_spec("bidfcl.metrics") is None, reason="bidfcl.metrics not in this build")
def test_two_options_report_aucc():
    cfg = config_from_dict({"data": {**TINY, "n_options": 2}, "model": {"hidden": [8]},
                            "train": {"epochs": 2, "batch_size": 128}, "output": {"progress": "none"}})
    res = make_trainer(cfg, load_run_data(cfg.data)).fit()
    assert 0.0 < res["evaluation"]["aucc"] < 1.0


@needs_bilevel
def test_gauss_newton_equals_hessian_for_a_linear_model(data):
    """With no hidden layer the outputs are linear in theta, so the Gauss-Newton matrix is the
    Hessian of the (squared-error) lower loss and both hypergradients agree."""
    res = {}
    for curvature in ("hessian", "gauss-newton"):
        cfg = config_from_dict({"data": TINY, "model": {"hidden": []},
                                "train": {"method": "bidfcl", "curvature": curvature, "cg_iters": 200,
                                          "cg_tol": 1e-10, "damping": 1e-3, "epochs": 0, "teacher_epochs": 3,
                                          "warm_start_epochs": 3, "batch_size": 128, "lr": 3e-3,
                                          "budget_fraction": 0.9},
                                "output": {"progress": "none"}, "eval": {"select": "last"}})
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


@needs_bilevel
def test_gauss_newton_mixed_term_from_jvp_equals_the_double_backward_one(data):
    """The default (Gauss-Newton) path forms the mixed term as d/dphi <dl/do, J v> through the
    bridge's gates; on the trainer's real lower objective (ReLU MLP, gates varying by cell) it
    equals grad_phi <v, grad_theta L_low> by double backward, and the products equal J' D J v
    with D = diag(2 W / N) formed densely."""
    from bidfcl import implicit
    from bidfcl.train.bilevel import lower_targets

    cfg = config_from_dict({"data": TINY, "model": {"hidden": [6, 5], "bridge_hidden": [4]},
                            "train": {"method": "bidfcl", "epochs": 0, "teacher_epochs": 3, "warm_start_epochs": 3,
                                      "batch_size": 128, "lr": 3e-3, "budget_fraction": 0.9, "cg_iters": 5},
                            "output": {"progress": "none"}, "eval": {"select": "last"}})
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
    assert cfg.train.curvature == "gauss-newton" and res.state.iter_num == 5
    inner = [p.detach().clone().requires_grad_(True) for p in tr.target.parameters()]
    outer = list(tr.bridge.parameters())
    lower = tr.lower_objective(tr.target, batch, idx)
    grads_low = implicit._lower_gradients(lower, inner, outer)
    mixed = implicit._mixed_term(grads_low, res.solution, outer)
    upper = lambda th, ph: tr._upper_or_zero(*torch.func.functional_call(  # noqa: E731
        tr.target, dict(zip(tr.t_names, th)), (d64.rct.x,)), d64.rct)
    _, _, direct = implicit._upper_gradients(upper, inner, outer)
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
        _, w = lower_targets(batch, tr.teach_r[idx], tr.teach_c[idx], *tr.bridge(batch.x),
                                     cfg.train.bridge_mode, cfg.train.gate_factual)
    dense = jac.T @ ((2 * w.reshape(-1) / len(idx)) * (jac @ flat(v)))
    torch.testing.assert_close(flat(gn.matvec(v)), dense, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------- decision quality (bridge, DFCL, budgets)
@needs_bilevel
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
    d = load_run_data(config_from_dict({"data": {"n_rct": 300, "n_obs": 192, "n_val": 200, "n_test": 200,
                                                 "dtype": "float64"}}).data)
    cfg = config_from_dict({"model": {"hidden": [5], "bridge_hidden": [4], "activation": "silu"},
                            "train": {"method": "bidfcl", "epochs": 0, "teacher_epochs": 40, "warm_start_epochs": 40,
                                      "batch_size": 192, "lr": 1e-2, "damping": mu, "cg_iters": 400, "cg_tol": 1e-12,
                                      "rct_batch_size": 0, "curvature": "auto"},
                            "eval": {"select": "last"}, "output": {"progress": "none"}})
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
            out.append(v[o:o + p.numel()].view_as(p))
            o += p.numel()
        return out

    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    phi0 = flat([p.detach() for p in bps])
    objective = tr.lower_objective(tr.target, batch, idx)

    def low(v, phi):
        return objective(split(v, tps), split(phi, bps)) + 0.5 * mu * (v ** 2).sum()

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
        return (upper(solve_lower(vstar, phi0 + h * direction)) - upper(solve_lower(vstar, phi0 - h * direction))) / (2 * h)

    def cosine_and_length(grad):
        """Cosine with the true hypergradient within the 7-dimensional subspace spanned by grad
        and six random directions, and <true, grad/|grad|> / |grad|."""
        unit = grad / grad.norm()
        along = fd(unit)
        gen = torch.Generator().manual_seed(1)
        rest = torch.linalg.qr(torch.cat([unit[:, None], torch.randn(len(phi0), 6, generator=gen,
                                                                     dtype=torch.float64)], 1)).Q[:, 1:]
        across = torch.tensor([fd(rest[:, k]) for k in range(rest.shape[1])], dtype=torch.float64)
        return along / math.sqrt(along ** 2 + float((across ** 2).sum())), along / float(grad.norm())

    cos, length = cosine_and_length(grad)
    assert cos >= 0.9, (cos, length)
    assert abs(length - 1) < 0.1  # and the right length
    # the default curvature, Gauss-Newton, leaves out the Hessian's residual term: at a lower
    # solution it still points along the true hypergradient (measured: cosine 0.97, length ratio 0.72)
    tr.cfg.train.curvature, tr.cg_warm = "gauss-newton", None
    gn = tr.implicit_hypergradient(tr.target, batch, idx, rct)
    assert gn.state.status == "converged"
    gn_cos, gn_length = cosine_and_length(flat(gn.grads))
    print("gauss-newton: cosine", gn_cos, "length ratio", gn_length)
    assert gn_cos >= 0.9, (gn_cos, gn_length)


@needs_bilevel
def test_fixed_gates_take_no_bridge_steps(data):
    cfg = cfg_of({"method": "bidfcl", "epochs": 1, "teacher_epochs": 1, "warm_start_epochs": 1, "k": 1,
                  "learn_bridge": False}, eval={"select": "last"})
    tr = BidfclTrainer(cfg, data)
    res = tr.fit()
    assert all(float(p.detach().abs().max()) == 0 for p in tr.bridge.heads.parameters())  # gates stay at 1/2
    assert "up" not in res["history"][-1]


@needs_losses
def test_dfcl_keeps_its_cost_model_feasible_at_every_budget(data):
    """The decision loss reaches only the revenue heads; the cost heads keep fitting the logged costs
    and the free option's cost is exactly zero, so every evaluated budget stays feasible."""
    cfg = cfg_of({"method": "dfcl", "loss": "ppl", "epochs": 4, "warm_start_epochs": 2, "lr": 1e-2})
    tr = DfclTrainer(cfg, data)
    assert tr.model.free_options == [0]
    res = tr.fit()
    ev = res["evaluation"]
    assert ev["n_infeasible"] == 0 and all(ev["feasible"])
    assert "cost_mse" in res["history"][-1]


def test_free_options_are_detected_from_logged_costs(data):
    from bidfcl.train.datasets import free_options

    assert free_options(data.rct, data.obs) == [0]
    paid = data.rct._replace(cost=data.rct.cost + 1.0)
    assert free_options(paid) == []
    assert free_options(None) == []


@needs_losses
def test_decision_loss_over_several_budgets_is_the_mean(data):
    from bidfcl.train.dfcl import decision_loss

    torch.manual_seed(0)
    r = torch.rand(len(data.rct), data.n_options) + torch.arange(data.n_options) * 0.1
    c = torch.arange(data.n_options, dtype=torch.float32).expand_as(r).contiguous() * 0.2
    single = [decision_loss("ppl", r, c, data.rct, b) for b in (0.1, 0.3)]
    both = decision_loss("ppl", r, c, data.rct, [0.1, 0.3])
    torch.testing.assert_close(both, (single[0] + single[1]) / 2)


def test_eval_budgets_in_each_unit(data):
    from bidfcl.train.datasets import max_arm_cost
    from bidfcl.train.evaluate import eval_budgets

    ds = data.val
    top = max_arm_cost(ds)
    ev = config_from_dict({"eval": {"budgets": [0.3]}}).eval
    assert eval_budgets(ev, ds) == pytest.approx([0.3 * top])
    ev = config_from_dict({"eval": {"budgets": [0.25, 0.5], "budget_unit": "per_capita"}}).eval
    assert eval_budgets(ev, ds) == [0.25, 0.5]
    ev = config_from_dict({"eval": {"budgets": [60.0], "budget_unit": "total"}}).eval
    assert eval_budgets(ev, ds) == pytest.approx([60.0 / len(ds)])
    assert len(eval_budgets(config_from_dict({}).eval, ds)) == 10
    # selection uses them too
    cfg = cfg_of({"epochs": 1}, eval={"budgets": [0.3, 0.6]})
    tr = TsmTrainer(cfg, data)
    assert tr.val_budgets == pytest.approx([0.3 * max_arm_cost(tr.val_ds), 0.6 * max_arm_cost(tr.val_ds)])
    assert len(tr.fit()["evaluation"]["budgets"]) == 2


@pytest.mark.parametrize("section,key,value,match", [
    ("eval", "budgets", [0.0], "eval.budgets"),
    ("eval", "budgets", [], "eval.budgets"),
    ("eval", "budget_unit", "euros", "eval.budget_unit"),
    ("train", "budget_fractions", [1.5], "train.budget_fractions"),
    ("train", "decision_heads", "cost", "train.decision_heads"),
    ("train", "curvature", "newton", "train.curvature"),
    ("model", "free_options", [-1], "model.free_options"),
])
def test_new_keys_reject_bad_values(section, key, value, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({section: {key: value}})


def test_experiment_table_names_models_that_cannot_allocate_a_budget():
    from bidfcl.train.experiment import markdown_table, summarize

    def run(method, seed, eom, infeasible):
        return {"seed": seed, "method": method, "main_epoch_seconds": 1.0, "fit_seconds": 1.0,
                "evaluation": {"eom_mean": eom, "n_infeasible": infeasible}}

    runs = [run("tsm-rct", 0, 1.0, 0), run("dfcl-ppl", 0, 1.1, 3), run("tsm-rct", 1, 1.0, 0), run("dfcl-ppl", 1, 1.0, 1)]
    rows = summarize(runs, ["tsm-rct", "dfcl-ppl"], "tsm-rct")
    assert [r["infeasible"] for r in rows] == [0, 4]
    table = markdown_table(rows, "tsm-rct")
    assert "could not allocate" in table and "dfcl-ppl (4)" in table and "tsm-rct (" not in table
    assert "could not allocate" not in markdown_table(summarize(runs[:1], ["tsm-rct"], "tsm-rct"), "tsm-rct")


@needs_losses
def test_decision_loss_leaves_out_budgets_with_an_infinite_multiplier(data, monkeypatch):
    """Seen on causalml data: cost heads that underflow to (denormal) zero make lam* infinite on a
    feasible budget; the decision loss leaves such budgets out instead of failing in ppl_loss."""
    import bidfcl.train.dfcl as dfcl

    real = dfcl.solve_mckp_rct

    def one_infinite(*args, **kw):
        sol = real(*args, **kw)
        return sol._replace(lam=torch.cat([torch.full_like(sol.lam[:1], math.inf), sol.lam[1:]]),
                            feasible=torch.ones_like(sol.feasible))

    torch.manual_seed(0)
    r = torch.rand(len(data.rct), data.n_options)
    c = torch.arange(data.n_options, dtype=torch.float32).expand_as(r).contiguous() * 0.2
    monkeypatch.setattr(dfcl, "solve_mckp_rct", one_infinite)
    assert dfcl.decision_loss("ppl", r, c, data.rct, [0.1]) is None
    monkeypatch.setattr(dfcl, "solve_mckp_rct", real)
    expect = dfcl.decision_loss("ppl", r, c, data.rct, [0.3])
    monkeypatch.setattr(dfcl, "solve_mckp_rct", one_infinite)
    torch.testing.assert_close(dfcl.decision_loss("ppl", r, c, data.rct, [0.1, 0.3]), expect)
