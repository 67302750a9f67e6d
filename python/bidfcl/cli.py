"""The ``bidfcl`` command (also ``python -m bidfcl``)."""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

__all__ = ["main"]


def random_allocation_problem(n: int, m: int, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A random marketing-shaped allocation problem: option 0 is free, costs grow with the option,
    revenue grows with diminishing returns and a per-user responsiveness."""
    g = torch.Generator().manual_seed(seed)
    responsiveness = torch.rand(n, 1, generator=g, dtype=torch.float64) * 2.0
    base = torch.rand(n, 1, generator=g, dtype=torch.float64)
    level = torch.arange(m, dtype=torch.float64).unsqueeze(0)
    unit_cost = 0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64)
    costs = unit_cost * level * (1.0 + 0.1 * torch.rand(n, m, generator=g, dtype=torch.float64))
    uplift = responsiveness * torch.log1p(level) * (0.8 + 0.4 * torch.rand(n, m, generator=g, dtype=torch.float64))
    values = base + uplift
    return values.to(dtype), costs.to(dtype)


def _solve_demo(args) -> int:
    import bidfcl

    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    values, costs = random_allocation_problem(args.users, args.options, args.seed, dtype)
    t_gen = time.perf_counter() - t0
    low = float(costs.min(1).values.double().sum())
    high = float(costs.max(1).values.double().sum())
    budget = low + args.budget_fraction * (high - low)
    bidfcl.solve_mckp(values[:1000], costs[:1000], budget * 1000 / args.users, method=args.method)  # warm-up
    t0 = time.perf_counter()
    sol = bidfcl.solve_mckp(values, costs, budget, method=args.method)
    t_solve = time.perf_counter() - t0
    t0 = time.perf_counter()
    _ = values.sum() + costs.sum()
    t_stream = time.perf_counter() - t0
    gap = float(sol.dual_bound) - float(sol.value)
    print(f"bidfcl {bidfcl.__version__} solve-demo: allocation of {args.options} options to {args.users:,} users ({args.dtype}, {torch.get_num_threads()} threads)")
    print(f"  problem generated in {t_gen:.2f} s; budget = {budget:,.2f} ({args.budget_fraction:.0%} of the way from the cheapest to the dearest policy)")
    print(f"  method            {args.method}")
    print(f"  lam*              {float(sol.lam):.9g}")
    print(f"  spend / budget    {float(sol.spend):,.4f} / {budget:,.4f} = {float(sol.spend) / budget:.9f}")
    print(f"  value             {float(sol.value):,.4f}")
    print(f"  dual bound        {float(sol.dual_bound):,.4f}  (gap {gap:,.4f} = {gap / abs(float(sol.dual_bound)):.2e} relative; optimum lies in between)")
    print(f"  users upgraded    {int((sol.choice > 0).sum()):,} of {args.users:,}")
    print(f"  solve time        {t_solve * 1e3:.1f} ms  ({t_solve / t_stream:.1f}x one streaming pass over the inputs, {t_stream * 1e3:.1f} ms)")
    return 0


def _parse_sets(items) -> dict:
    """``--set section.key=value`` (value as a TOML literal; a bare word is a string)."""
    from .train.config import NO_TOML_PARSER, ConfigError, tomllib

    if items and tomllib is None:  # keeping every value as text would change their types silently
        raise ConfigError(NO_TOML_PARSER)
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"bidfcl: --set expects section.key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:  # not a TOML literal (a bare word): keep the text
            out[key.strip()] = value
    return out


def _threads(n: int) -> None:
    if n:
        torch.set_num_threads(n)


def _load_cfg(args):
    from .train import load_config

    over = _parse_sets(getattr(args, "set", None))
    if getattr(args, "scenario", None):
        over["data.scenario"] = args.scenario
    if getattr(args, "out", None):
        over["output.dir"] = args.out
    return load_config(args.config, over)


def _train(args) -> int:
    from .train import load_run_data, make_trainer

    cfg = _load_cfg(args)
    _threads(args.threads or cfg.output.threads)
    data = load_run_data(cfg.data)
    trainer = make_trainer(cfg, data, out_dir=cfg.output.dir)
    result = trainer.fit(resume=args.resume)
    _print_evaluation(result["evaluation"], f"{cfg.train.method} on the {result['split']} split")
    print(f"wrote {cfg.output.dir}/model.pt, metrics.json, history.csv, checkpoint.pt")
    return 0


def _print_evaluation(ev: dict, title: str) -> None:
    print(f"{title}: EOM (IPW revenue per capita) at {len(ev['budgets'])} budgets")
    truth = "true_value" in ev
    head = f"  {'budget':>9} {'EOM':>9} {'± se':>8} {'spend':>9}" + (f" {'true':>9} {'oracle':>9} {'gain':>7}" if truth else "")
    print(head)
    for k, b in enumerate(ev["budgets"]):
        line = f"  {b:9.4f} {ev['eom'][k]:9.4f} {ev['eom_se'][k]:8.4f} {ev['eom_cost'][k]:9.4f}"
        if truth:
            line += f" {ev['true_value'][k]:9.4f} {ev['oracle_value'][k]:9.4f} {ev['gain_share'][k]:7.3f}"
        if not ev["feasible"][k]:
            line += "  INFEASIBLE: the model's cheapest policy overspends; scored: everyone on the cheapest arm"
        print(line)
    line = f"  mean EOM {ev['eom_mean']:.4f}"
    if truth:
        line += f"; mean true value {ev['true_value_mean']:.4f} (oracle {ev['oracle_value_mean']:.4f}, gain share {ev['gain_share_mean']:.3f})"
    if "aucc" in ev:
        line += f"; AUCC {ev['aucc']:.4f}"
    print(line)
    if ev.get("n_infeasible"):
        print(f"  warning: the model cannot allocate {ev['n_infeasible']} of the {len(ev['budgets'])} budgets "
              f"(marked INFEASIBLE above)")


def _evaluate(args) -> int:
    import json

    from .train import config_from_dict, load_config, load_model, load_run_data
    from .train.evaluate import budget_levels, eval_budgets, evaluate_model

    _threads(args.threads)
    model, meta = load_model(args.model)
    if args.config:
        cfg = load_config(args.config, _parse_sets(args.set))
    elif meta.get("run_config"):
        cfg = config_from_dict(meta["run_config"])
        if args.set:
            cfg = cfg.replace(_parse_sets(args.set))
    else:
        print("bidfcl: the model file carries no run config; give --config", file=sys.stderr)
        return 2
    data = load_run_data(cfg.data)
    split = args.split or cfg.eval.split
    ds = getattr(data, split, None)
    if ds is None:
        print(f"bidfcl: the data has no {split!r} split", file=sys.stderr)
        return 2
    if ds.n_features != model.n_features or ds.n_options != model.n_options:
        print(f"bidfcl: the model expects {model.n_features} features and {model.n_options} options, the data has "
              f"{ds.n_features} and {ds.n_options}", file=sys.stderr)
        return 2
    budgets = budget_levels(ds, args.budgets) if args.budgets else eval_budgets(cfg.eval, ds)
    ev = evaluate_model(model, ds, budgets, truth=data.marketing,
                        split=split if data.marketing is not None else None)
    _print_evaluation(ev, f"{meta.get('method') or 'model'} {args.model} on the {split} split")
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(ev, fh, indent=1)
        print(f"wrote {args.output}")
    return 0


def _read_features(path: str, columns):
    """Feature matrix (and the table) from a Parquet or CSV file via pyarrow."""
    import numpy as np

    from .data.loaders import _pyarrow

    pa = _pyarrow()  # MissingDependencyError (one line, naming the extra) without pyarrow
    pacsv, pq = pa.csv, pa.parquet
    low = path.lower()
    table = pq.read_table(path) if low.endswith((".parquet", ".pq")) else pacsv.read_csv(path)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise SystemExit(f"bidfcl allocate: {path} lacks feature column(s) {missing} (has {table.column_names})")
    cols = []
    for c in columns:
        col = table.column(c).to_numpy(zero_copy_only=False)
        if not np.issubdtype(col.dtype, np.number) and col.dtype != np.bool_:
            raise SystemExit(f"bidfcl allocate: expected numeric column {c!r}, got {col.dtype}")
        col = col.astype(np.float64)
        if not np.all(np.isfinite(col)):
            raise SystemExit(f"bidfcl allocate: column {c!r} has missing or non-finite values "
                             f"(first at row {int(np.flatnonzero(~np.isfinite(col))[0])})")
        cols.append(col)
    x = np.stack(cols, axis=1) if cols else np.zeros((table.num_rows, 0))
    return torch.from_numpy(x), table


def _allocate(args) -> int:
    import bidfcl

    from .train import load_model

    _threads(args.threads)
    model, meta = load_model(args.model)
    run = meta.get("run_config") or {}
    if args.features:
        features = [c.strip() for c in args.features.split(",") if c.strip()]
    elif run.get("data", {}).get("source") == "files" and run["data"].get("features"):
        features = list(run["data"]["features"])
    else:
        features = [f"x{j}" for j in range(model.n_features)]
    if len(features) != model.n_features:
        print(f"bidfcl allocate: the model expects {model.n_features} features, got {len(features)} columns",
              file=sys.stderr)
        return 2
    x, table = _read_features(args.input, features)
    x = x.to(model.mean.dtype)
    r_hat, c_hat = model.predict(x)
    c_hat = c_hat.clamp_min(0.0)
    n = x.shape[0]
    if (args.budget is None) == (args.total_budget is None):
        print("bidfcl allocate: give exactly one of --budget (per capita) or --total-budget", file=sys.stderr)
        return 2
    total = args.total_budget if args.total_budget is not None else args.budget * n
    if total < 0:
        print(f"bidfcl allocate: expected a budget >= 0, got {total}", file=sys.stderr)
        return 2
    sol = bidfcl.solve_mckp(r_hat, c_hat, float(total))
    choice = sol.choice
    rows = torch.arange(n)
    exp_rev = r_hat[rows, choice].to(torch.float64)
    exp_cost = c_hat[rows, choice].to(torch.float64)
    import pyarrow as pa

    cols = {}
    if args.id_column:
        if args.id_column not in table.column_names:
            print(f"bidfcl allocate: no id column {args.id_column!r} in {args.input}", file=sys.stderr)
            return 2
        cols[args.id_column] = table.column(args.id_column)
    else:
        cols["row"] = pa.array(rows.numpy())
    cols["option"] = pa.array(choice.numpy())
    cols["expected_revenue"] = pa.array(exp_rev.numpy())
    cols["expected_spend"] = pa.array(exp_cost.numpy())
    out = pa.table(cols)
    if args.output.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        pq.write_table(out, args.output)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(out, args.output)
    counts = torch.bincount(choice, minlength=model.n_options).tolist()
    print(f"allocated {n:,} users under a total budget of {total:,.4f}: lam* = {float(sol.lam):.6g}, "
          f"expected spend {float(sol.spend):,.4f}, expected revenue {float(sol.value):,.4f}")
    print(f"  users per option: {counts}")
    print(f"wrote {args.output}")
    return 0


def _experiment(args) -> int:
    from .train.experiment import combine_results, run_experiment
    from .train.loop import Progress

    if args.combine:
        if not args.out:
            print("bidfcl experiment: --combine needs --out (where the merged table goes)", file=sys.stderr)
            return 2
        out = combine_results([d for d in args.combine.split(",") if d], args.out)
        print(out["table"], end="")
        print(f"wrote {args.out}/results.md, results.csv, curves.csv, results.json")
        return 0
    if not args.config:
        print("bidfcl experiment: give --config (or --combine DIR,DIR --out DIR)", file=sys.stderr)
        return 2

    over = _parse_sets(args.set)
    if args.scenario:
        over["data.scenario"] = args.scenario
    if args.seeds:
        over["experiment.seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.methods:
        over["experiment.methods"] = [m.strip() for m in args.methods.split(",")]
    if args.out:
        over["output.dir"] = args.out
    from .train import load_config

    cfg = load_config(args.config, over)
    _threads(args.threads or cfg.output.threads)
    out = run_experiment(cfg, cfg.output.dir, progress=Progress(args.progress))
    print()
    print(out["table"], end="")
    print(f"wrote {cfg.output.dir}/results.md, results.csv, curves.csv, results.json"
          + (f", {out['plot']}" if out["plot"] and out["plot"].endswith(".png") else ""))
    return 0


#: the learning demo's data scenario (bidfcl.data.SCENARIOS): one where the methods separate
DEMO_SCENARIO = "biased-small-rct"

#: the learning demo: a complete small experiment on built-in synthetic data (about 2 minutes on one thread);
#: [data] is replaced by ``{"scenario": --scenario}`` (the scenario's sizes)
DEMO_CONFIG = {
    "data": {"scenario": DEMO_SCENARIO},
    "model": {"hidden": [128, 64, 32]},
    "train": {"epochs": 10, "teacher_epochs": 150, "warm_start_epochs": 5, "batch_size": 1024, "lr": 1e-3},
    "experiment": {"methods": ["tsm-rct", "tsm-obs", "tsm-pooled", "dfcl-ppl", "bidfcl-ppl-fixed", "bidfcl-ppl"],
                   "seeds": [0], "reference": "tsm-rct",
                   # RCT-only models see 50x fewer rows per epoch: as many epochs as the teacher;
                   # DFCL fine-tunes that TSM-on-RCT model (its warm start) with the decision loss
                   "overrides": {"tsm-rct": {"train.epochs": 150},
                                 "dfcl-ppl": {"train.epochs": 30, "train.warm_start_epochs": 150}}},
    "output": {"progress": "none"},
}


def _learning_demo(args) -> int:
    from .train import config_from_dict
    from .train.datasets import synthetic_kwargs
    from .train.experiment import run_experiment

    torch.set_num_threads(args.threads)
    raw = {k: dict(v) for k, v in DEMO_CONFIG.items()}
    raw["experiment"] = dict(raw["experiment"], seeds=[int(s) for s in args.seeds.split(",")])
    raw["data"] = {"scenario": args.scenario}
    if args.quick:  # a smoke run: tiny data on top of the scenario, few epochs
        raw["data"].update(n_rct=1000, n_obs=5000, n_val=1000, n_test=5000)
        raw["train"] = dict(raw["train"], epochs=2, teacher_epochs=2, warm_start_epochs=1, cg_iters=10)
        raw["experiment"]["overrides"] = {}
    cfg = config_from_dict(raw)
    t = cfg.train
    d = synthetic_kwargs(cfg.data)
    n_rct = d.get("n_rct", 20000)
    print(f"bidfcl {__import__('bidfcl').__version__} demo: learning to allocate a budget on synthetic marketing data "
          f"with ground truth ({torch.get_num_threads()} threads)")
    print(f"  data: scenario {cfg.data.scenario!r} (`bidfcl scenarios` lists them; --scenario NAME for another)")
    print(f"  {n_rct:,} RCT + {d.get('n_obs', 10 * n_rct):,} biased OBS users (hidden confounder), "
          f"{d.get('n_val', 20000):,} validation, {d.get('n_test', 100000):,} test; {d.get('n_options', 5)} options "
          f"({d.get('outcome', 'continuous')} revenue), option 0 free")
    print(f"  methods: {', '.join(cfg.experiment.methods)}; seeds {cfg.experiment.seeds}; "
          f"Bi-DFCL k = {t.k}, {t.cg_iters} CG iterations")
    print("  each model is scored on the test users at 10 budgets: EOM (IPW estimate from the randomised test rows)")
    print("  and the true revenue of its allocation (known here), against TSM on RCT (= 1.0000) and the oracle")
    print()
    out = run_experiment(cfg, args.out, log=lambda m: print("  " + m, flush=True))
    print()
    print(out["table"], end="")
    print(f"\n({out['seconds']:.0f} s in all. Columns: EOM and true value are means over the 10 budgets divided by "
          f"the reference's; oracle gain share = (V - V_nobody) / (V_oracle - V_nobody).)")
    if args.out:
        print(f"wrote {args.out}/results.md, results.csv, curves.csv, results.json")
    return 0


def _scenarios(args) -> int:
    import textwrap

    from .data import SCENARIOS

    def ratio(v):
        return "-" if v is None else f"{v:.3f}"

    print("bidfcl data scenarios (make_marketing keyword sets; use [data] scenario = NAME or --scenario NAME)")
    print("measured with benchmarks/scenario_headroom.py: true revenue per capita (mean over 10 budgets) of the")
    print("oracle and of TSM on OBS / pooled, relative to TSM on RCT = 1")
    for s in SCENARIOS.values():
        print()
        print(f"{s.name}: {s.sizes()}")
        print(textwrap.fill(s.description, width=100, initial_indent="  ", subsequent_indent="  "))
        kw = ", ".join(f"{k}={v!r}" for k, v in s.kwargs.items() if not k.startswith("n_") or k == "n_options")
        print(f"  keywords: {kw or '(make_marketing defaults)'}")
        seeds = f" ({len(s.measured_seeds)} seeds)" if s.measured_seeds else ""
        print(f"  oracle/TSM-RCT {ratio(s.oracle_vs_tsm_rct)}, TSM-OBS/TSM-RCT {ratio(s.tsm_obs_vs_tsm_rct)}, "
              f"TSM-pooled/TSM-RCT {ratio(s.tsm_pooled_vs_tsm_rct)}{seeds}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bidfcl", description="Budget-constrained marketing allocation, learned for the decision.")
    sub = parser.add_subparsers(dest="command", required=True)
    learn = sub.add_parser("demo", help="the main job in small: TSM (RCT/OBS/pooled), DFCL-PPL, Bi-DFCL-PPL/-PIFD on "
                                        "built-in synthetic data, scored against the truth (about 2 minutes)")
    learn.add_argument("--seeds", default="0", help="comma-separated seeds (one table row per method, mean over seeds)")
    learn.add_argument("--threads", type=int, default=2, help="torch threads")
    learn.add_argument("--out", help="also write results.md/.csv, curves.csv, results.json here")
    learn.add_argument("--quick", action="store_true", help="tiny data and few epochs (a smoke run, seconds)")
    learn.add_argument("--scenario", default=DEMO_SCENARIO,
                       help=f"data scenario (see `bidfcl scenarios`; default {DEMO_SCENARIO}); its sizes replace the "
                            "demo's (with --quick: tiny sizes on top of it)")
    learn.set_defaults(func=_learning_demo)

    demo = sub.add_parser("solve-demo", help="solve a random 1M-user, 8-option allocation problem and report lam*, spend, value, bound and time")
    demo.add_argument("--users", type=int, default=1_000_000)
    demo.add_argument("--options", type=int, default=8)
    demo.add_argument("--budget-fraction", type=float, default=0.3, help="budget between the cheapest (0) and dearest (1) policy")
    demo.add_argument("--method", choices=["exact", "bisection"], default="exact")
    demo.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    demo.set_defaults(func=_solve_demo)

    tr = sub.add_parser("train", help="train one model from a TOML config (writes model.pt, metrics.json, history.csv)")
    tr.add_argument("--config", required=True, help="TOML file ([data], [model], [train], [eval], [output])")
    tr.add_argument("--out", help="output folder (overrides output.dir)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    tr.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    tr.add_argument("--threads", type=int, default=0)
    tr.add_argument("--scenario", help="data scenario (sets data.scenario; see `bidfcl scenarios`)")
    tr.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="score a saved model: EOM over the budget levels (true value on synthetic data)")
    ev.add_argument("--model", required=True, help="model.pt (or checkpoint.pt) written by `bidfcl train`")
    ev.add_argument("--config", help="TOML config for the data (default: the config saved with the model)")
    ev.add_argument("--split", choices=["rct", "val", "test"], help="split to score (default: eval.split)")
    ev.add_argument("--budgets", type=int, default=0, help="number of budget levels (default: eval.n_budgets)")
    ev.add_argument("--output", help="write the evaluation as JSON here")
    ev.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    ev.add_argument("--threads", type=int, default=0)
    ev.set_defaults(func=_evaluate)

    al = sub.add_parser("allocate", help="score users from a Parquet/CSV file and allocate a budget")
    al.add_argument("--model", required=True)
    al.add_argument("--input", required=True, help="Parquet (.parquet/.pq) or CSV file with the feature columns")
    al.add_argument("--output", required=True, help="CSV or Parquet: id/row, option, expected_revenue, expected_spend")
    al.add_argument("--budget", type=float, help="budget per user (per capita)")
    al.add_argument("--total-budget", type=float, help="total budget")
    al.add_argument("--features", help="comma-separated feature columns (default: the training config's, or x0..x{F-1})")
    al.add_argument("--id-column", help="column copied to the output to identify users")
    al.add_argument("--threads", type=int, default=0)
    al.set_defaults(func=_allocate)

    ex = sub.add_parser("experiment", help="methods x seeds -> results table (Markdown, CSV) and EOM-vs-budget plot")
    ex.add_argument("--config", help="TOML config ([experiment] methods, seeds, reference, overrides)")
    ex.add_argument("--combine", help="comma-separated experiment output folders to merge into one table (no training)")
    ex.add_argument("--out", help="output folder (overrides output.dir)")
    ex.add_argument("--seeds", help="comma-separated seeds (overrides experiment.seeds)")
    ex.add_argument("--methods", help="comma-separated methods (overrides experiment.methods)")
    ex.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    ex.add_argument("--progress", choices=["auto", "bar", "lines", "none"], default="none")
    ex.add_argument("--threads", type=int, default=0)
    ex.add_argument("--scenario", help="data scenario (sets data.scenario; see `bidfcl scenarios`)")
    ex.set_defaults(func=_experiment)

    sc = sub.add_parser("scenarios", help="list the named data scenarios with their sizes and measured headroom")
    sc.set_defaults(func=_scenarios)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "solve-demo":
        from ._optional import MissingDependencyError
        from .train.config import ConfigError
        from .data import DataError

        try:
            return args.func(args)
        except (ConfigError, DataError, FileNotFoundError, ValueError, MissingDependencyError) as exc:
            if os.environ.get("BIDFCL_DEBUG"):
                raise
            print(exc if str(exc).startswith("bidfcl") else f"bidfcl {args.command}: {exc}", file=sys.stderr)
            return 2
    if getattr(args, "users", 1) < 1 or getattr(args, "options", 1) < 1:
        print("bidfcl: --users and --options must be >= 1", file=sys.stderr)
        return 2
    if not 0.0 <= getattr(args, "budget_fraction", 0.0) <= 1.0:
        print("bidfcl: --budget-fraction must be in [0, 1]", file=sys.stderr)
        return 2
    return args.func(args)
