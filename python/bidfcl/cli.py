"""The ``bidfcl`` command (also ``python -m bidfcl``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import textwrap
import time

import numpy as np
import torch

from . import __version__, allocation, bench
from . import budgets as budget_units
from ._constants import MAX_OPTIONS
from ._optional import MissingDependencyError
from .bench import PEERS, random_allocation_problem
from .budgets import BudgetUnit
from .data import SCENARIOS, DataError, write_splits
from .data.loaders import _pyarrow
from .devices import resolve_device
from .solver import solve_mckp
from .streaming import StreamingInputError, allocate_file
from .train import ExperimentConfig, config_from_dict, load_config, load_model, load_run_data, make_trainer
from .train import config as train_config
from .train.config import ConfigError
from .train.datasets import synthetic_kwargs
from .train.evaluate import budget_levels, eval_budgets, evaluate_model
from .train.experiment import combine_results, run_experiment
from .train.loop import Progress, read_checkpoint
from .train.parallel import Parallel

__all__ = ["main"]


class UsageError(ValueError):
    """A command line that cannot run (printed as one line, exit status 2)."""


# ------------------------------------------------------------------------------ argument types
def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} (an integer >= {low}), got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what} (an integer >= {low}), got {value}")
        return value

    return parse


def _finite_float(what: str, low: float | None = None, high: float | None = None):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} (a number), got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {what} (a finite number), got {text!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            rng = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"expected {what} {rng}, got {value:g}")
        return value

    return parse


def _int_list(text: str) -> list[int]:
    """``--seeds 0,1,2`` -> [0, 1, 2] (non-negative, distinct)."""
    items = [t.strip() for t in text.split(",")]
    try:
        seeds = [int(t) for t in items]
    except ValueError:
        bad = next(t for t in items if not t.lstrip("-").isdigit())
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integer seeds like 0,1,2, got {text!r} ({bad!r} is not an integer)"
        ) from None
    if any(v < 0 for v in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds >= 0, got {text!r}")
    return seeds


def _name_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r} (an empty name)")
    return names


_THREADS = _int_at_least(0, "a thread count, 0 for torch's default")

#: file types ``allocate --output`` writes, by extension
_PLAN_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


# --------------------------------------------------------------------- checks before any work
def _check_writable_dir(path: str, what: str) -> None:
    """``path`` is (or can be created as) a folder this process can write into: checked by creating it
    and a probe file, so read-only folders, files in the way and full or read-only file systems are
    reported before data are generated or models trained."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{what} {path!r} exists and is not a folder; give a folder path")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".bidfcl-write-check-"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write into {what} {path!r}: {exc.strerror or exc}") from None


def _check_output_file(path: str, what: str) -> None:
    """``path`` can be written: not a folder, its folder writable."""
    if os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is a folder; give a file path")
    _check_writable_dir(os.path.dirname(os.path.abspath(path)), f"the folder of {what}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError(f"{what} {path!r} exists and is not writable")


def _check_input_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is a folder; give a file")


def _ratio(a: float, b: float, fmt: str) -> str:
    return format(a / b, fmt) if b != 0 else "n/a"


def _solve_demo(args) -> int:
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    _threads(args.threads)
    t0 = time.perf_counter()
    values, costs = random_allocation_problem(args.users, args.options, args.seed, dtype)
    t_gen = time.perf_counter() - t0
    # the flag is a range position (0: the cheapest policy's spend, 1: the dearest's); the solver takes a total
    budget_total = budget_units.convert(
        args.budget_position,
        BudgetUnit.RANGE_POSITION,
        BudgetUnit.TOTAL,
        spend_range=budget_units.spend_range(costs),
        name="--budget-position",
    )
    warm = min(1000, args.users)
    warm_total = budget_units.convert(budget_total, BudgetUnit.TOTAL, BudgetUnit.PER_CAPITA, n_rows=args.users) * warm
    solve_mckp(values[:warm], costs[:warm], warm_total, method=args.method)  # warm-up
    t0 = time.perf_counter()
    sol = solve_mckp(values, costs, budget_total, method=args.method)
    t_solve = time.perf_counter() - t0
    t0 = time.perf_counter()
    _ = values.sum() + costs.sum()
    t_stream = time.perf_counter() - t0
    gap = float(sol.dual_bound) - float(sol.value)
    print(
        f"bidfcl {__version__} solve-demo: allocation of {args.options} options to {args.users:,} users ({args.dtype}, {torch.get_num_threads()} threads)"
    )
    print(
        f"  problem generated in {t_gen:.2f} s; budget = {budget_total:,.2f} ({args.budget_position:.0%} of the way from the cheapest to the dearest policy)"
    )
    print(f"  method            {args.method}")
    print(f"  lam*              {float(sol.lam):.9g}")
    print(
        f"  spend / budget    {float(sol.spend):,.4f} / {budget_total:,.4f} = {_ratio(float(sol.spend), budget_total, '.9f')}"
    )
    print(f"  value             {float(sol.value):,.4f}")
    print(
        f"  dual bound        {float(sol.dual_bound):,.4f}  (gap {gap:,.4f} = {_ratio(gap, abs(float(sol.dual_bound)), '.2e')} relative; optimum lies in between)"
    )
    print(f"  users upgraded    {int((sol.choice > 0).sum()):,} of {args.users:,}")
    print(
        f"  solve time        {t_solve * 1e3:.1f} ms  ({_ratio(t_solve, t_stream, '.1f')}x one streaming pass over the inputs, {t_stream * 1e3:.1f} ms)"
    )
    return 0


def _parse_sets(items) -> dict:
    """``--set section.key=value`` (value as a TOML literal; a bare word is a string)."""
    if items and train_config.tomllib is None:  # keeping every value as text would change their types silently
        raise ConfigError(train_config.NO_TOML_PARSER)
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"bidfcl: --set expects section.key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = train_config.tomllib.loads(f"v = {value}")["v"]
        except train_config.tomllib.TOMLDecodeError:  # not a TOML literal (a bare word): keep the text
            out[key.strip()] = value
    return out


def _threads(n: int) -> None:
    """``--threads N`` (0: keep torch's default)."""
    if n < 0:
        raise UsageError(f"expected --threads >= 0 (0 = torch's default), got {n}")
    if n:
        torch.set_num_threads(n)


def _load_cfg(args):
    over = _parse_sets(getattr(args, "set", None))
    if getattr(args, "scenario", None):
        over["data.scenario"] = args.scenario
    if getattr(args, "out", None):
        over["output.dir"] = args.out
    if getattr(args, "device", None):
        over["train.device"] = args.device
    return load_config(args.config, over)


def _ignored_experiment_note(cfg, command: str) -> None:
    if cfg.experiment != ExperimentConfig():
        print(
            f"bidfcl {command}: note: this config's [experiment] section is used by `bidfcl experiment` only; "
            f"`bidfcl {command}` trains train.method = {cfg.train.method!r} (loss {cfg.train.loss!r}) once",
            file=sys.stderr,
        )


def _step(progress, text: str):
    """Print ``text...`` (with the progress setting) and return a function printing the elapsed time."""
    t0 = time.perf_counter()
    progress.message(f"{text} ...")
    return lambda: progress.message(f"  done in {time.perf_counter() - t0:.1f} s")


def _train(args) -> int:
    cfg = _load_cfg(args)
    if args.progress:
        cfg = cfg.replace({"output.progress": args.progress})
    _threads(args.threads or cfg.output.threads)
    _ignored_experiment_note(cfg, "train")
    # under torchrun: join the group (gloo on CPU, nccl on CUDA); every check below is agreed by all
    # ranks, so bad input on one rank stops every rank with the message instead of a hang
    par = Parallel.from_environment(cfg.train.device)
    try:
        return _train_ranks(args, cfg, par)
    finally:  # leave the group before exit (a gloo thread alive at exit can abort the process)
        par.close()


def _train_ranks(args, cfg, par) -> int:
    """``bidfcl train`` once ``par`` (this process's place in the run) is known."""
    # a device that does not exist fails before any work
    par.run_agreed("resolving train.device", resolve_device, cfg.train.device, "train.device")
    if par.is_main:  # rank 0 writes the outputs
        par.run_agreed("checking output.dir", _check_writable_dir, cfg.output.dir, "output.dir")
    else:
        par.agree(None, "checking output.dir")
    ckpt = os.path.join(cfg.output.dir, "checkpoint.pt")
    resuming = args.resume and os.path.exists(ckpt)
    if par.active:  # every rank resumes from rank 0's checkpoint: it must see one too
        resuming = all(par.gather_objects(bool(resuming))) if args.resume else False
    if resuming:  # a damaged checkpoint is reported before any data are read
        par.run_agreed("reading the checkpoint", read_checkpoint, ckpt)
    progress = Progress(cfg.output.progress if par.is_main else "none")
    done = _step(
        progress,
        f"reading the {cfg.data.source} data" if cfg.data.source == "files" else "generating the synthetic data",
    )
    data = load_run_data(cfg.data, parallel=par)
    done()
    trainer = make_trainer(cfg, data, out_dir=cfg.output.dir, progress=progress, parallel=par)
    result = trainer.fit(resume=resuming)
    if not par.is_main:  # metrics and paths are printed once
        return 0
    if par.active:
        print(
            f"data-parallel training on {par.world} processes (torch.distributed, "
            f"{'nccl' if trainer.device.type == 'cuda' else 'gloo'})"
        )
    _print_evaluation(result["evaluation"], f"{cfg.train.method} on the {result['split']} split")
    for phase, best in result["best"].items():
        print(
            f"  model selection ({cfg.eval.select} on validation): phase {phase}, epoch {best['epoch']} "
            f"(metric {best['metric']:.6g})"
        )
    print(f"wrote {cfg.output.dir}/model.pt, metrics.json, history.csv, checkpoint.pt")
    return 0


def _print_evaluation(ev: dict, title: str) -> None:
    print(f"{title}: EOM (IPW revenue per capita) at {len(ev['budgets'])} budgets")
    truth = "true_value" in ev
    head = f"  {'budget':>9} {'EOM':>9} {'± se':>8} {'spend':>9}" + (
        f" {'true':>9} {'oracle':>9} {'gain':>7}" if truth else ""
    )
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
        print(
            f"  warning: the model cannot allocate {ev['n_infeasible']} of the {len(ev['budgets'])} budgets "
            f"(marked INFEASIBLE above)"
        )


def _evaluate(args) -> int:
    _threads(args.threads)
    if args.output:
        _check_output_file(args.output, "--output")
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
        print(
            f"bidfcl: the model expects {model.n_features} features and {model.n_options} options, the data has "
            f"{ds.n_features} and {ds.n_options}",
            file=sys.stderr,
        )
        return 2
    budgets = budget_levels(ds, args.budgets) if args.budgets else eval_budgets(cfg.eval, ds)
    ev = evaluate_model(model, ds, budgets, truth=data.marketing, split=split if data.marketing is not None else None)
    _print_evaluation(ev, f"{meta.get('method') or 'model'} {args.model} on the {split} split")
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(ev, fh, indent=1)
        print(f"wrote {args.output}")
    return 0


def _read_features(path: str, columns):
    """Feature matrix (and the table) from a Parquet or CSV file via pyarrow."""
    pa = _pyarrow()  # MissingDependencyError (one line, naming the extra) without pyarrow
    pacsv, pq = pa.csv, pa.parquet
    low = path.lower()
    try:
        table = pq.read_table(path) if low.endswith((".parquet", ".pq")) else pacsv.read_csv(path)
    except (OSError, pa.ArrowException) as exc:
        kind = "Parquet" if low.endswith((".parquet", ".pq")) else "CSV"
        raise UsageError(f"cannot read --input {path!r} as {kind}: {str(exc).splitlines()[0][:200]}") from None
    if table.num_rows == 0:
        raise UsageError(f"--input {path!r} has no rows (columns {table.column_names}): nothing to allocate")
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise SystemExit(f"bidfcl allocate: {path} lacks feature column(s) {missing} (has {table.column_names})")
    cols = []
    for c in columns:
        col = table.column(c).to_numpy(zero_copy_only=False)
        if not np.issubdtype(col.dtype, np.number) and col.dtype != np.bool_:
            raise SystemExit(f"bidfcl allocate: expected numeric column {c!r} in {path}, got {col.dtype}")
        col = col.astype(np.float64)
        if not np.all(np.isfinite(col)):
            raise SystemExit(
                f"bidfcl allocate: column {c!r} of {path} has missing or non-finite values "
                f"(first at row {int(np.flatnonzero(~np.isfinite(col))[0])})"
            )
        cols.append(col)
    x = np.stack(cols, axis=1) if cols else np.zeros((table.num_rows, 0))
    return torch.from_numpy(x), table


def _allocate(args) -> int:
    _threads(args.threads)
    if (args.budget is None) == (args.total_budget is None):
        raise UsageError("give exactly one of --budget (per capita) or --total-budget")
    fmt = _PLAN_FORMATS.get(os.path.splitext(args.output)[1].lower())
    if fmt is None:
        raise UsageError(
            f"--output {args.output!r}: expected a .csv, .parquet or .pq file name, got extension "
            f"{os.path.splitext(args.output)[1] or '(none)'!r}"
        )
    _check_input_file(args.input, "--input")
    _check_output_file(args.output, "--output")
    model, meta = load_model(args.model)
    run = meta.get("run_config") or {}
    if args.features:
        features = [c.strip() for c in args.features.split(",") if c.strip()]
    elif run.get("data", {}).get("source") == "files" and run["data"].get("features"):
        features = list(run["data"]["features"])
    else:
        features = [f"x{j}" for j in range(model.n_features)]
    if len(features) != model.n_features:
        print(
            f"bidfcl allocate: the model expects {model.n_features} features, got {len(features)} columns",
            file=sys.stderr,
        )
        return 2
    constrained = allocation.cli_constraints_given(args)
    if args.chunk_rows and not constrained:
        return _allocate_streaming(args, model, features)
    if constrained and args.chunk_rows:
        print(
            "bidfcl allocate: note: several constraints are solved with the whole input in memory "
            "(--chunk-rows streams single-budget allocations only)",
            file=sys.stderr,
        )
    x, table = _read_features(args.input, features)
    x = x.to(model.mean.dtype)
    r_hat, c_hat = model.predict(x)
    c_hat = c_hat.clamp_min(0.0)
    n = x.shape[0]
    total = (
        args.total_budget
        if args.total_budget is not None
        else budget_units.convert(args.budget, BudgetUnit.PER_CAPITA, BudgetUnit.TOTAL, n_rows=n, name="--budget")
    )
    if total < 0:
        print(f"bidfcl allocate: expected a budget >= 0, got {total}", file=sys.stderr)
        return 2
    if constrained:
        sol, report = allocation.allocate_table(table, r_hat, c_hat, float(total), args)
    else:
        sol = solve_mckp(r_hat, c_hat, float(total))
    choice = sol.choice
    rows = torch.arange(n)
    exp_rev = r_hat[rows, choice].to(torch.float64)
    exp_cost = c_hat[rows, choice].to(torch.float64)
    import pyarrow as pa  # noqa: PLC0415 (optional dependency (an extra), imported where used)

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
    if fmt == "parquet":
        import pyarrow.parquet as pq  # noqa: PLC0415 (optional dependency (an extra), imported where used)

        pq.write_table(out, args.output)
    else:
        import pyarrow.csv as pacsv  # noqa: PLC0415 (optional dependency (an extra), imported where used)

        pacsv.write_csv(out, args.output)
    counts = torch.bincount(choice, minlength=model.n_options).tolist()
    if constrained:
        print("\n".join(report))
    else:
        print(
            f"allocated {n:,} users under a total budget of {total:,.4f}: lam* = {float(sol.lam):.6g}, "
            f"expected spend {float(sol.spend):,.4f}, expected revenue {float(sol.value):,.4f}"
        )
    print(f"  users per option: {counts}")
    print(f"wrote {args.output}")
    return 0


def _allocate_streaming(args, model, features) -> int:
    """``allocate --chunk-rows N``: two passes over the input in chunks (bidfcl.streaming)."""
    try:
        res = allocate_file(
            model,
            args.input,
            args.output,
            features,
            budget=args.budget,
            total_budget=args.total_budget,
            id_column=args.id_column,
            chunk_rows=args.chunk_rows,
            label="--input",
        )
    except StreamingInputError as exc:
        if exc.about_columns:  # as the in-memory path reports them
            raise SystemExit(f"bidfcl allocate: {exc}") from None
        raise
    print(
        f"allocated {res['n']:,} users under a total budget of {res['total_budget']:,.4f}: lam* = {res['lam']:.6g}, "
        f"expected spend {res['spend']:,.4f}, expected revenue {res['value']:,.4f}"
    )
    print(f"  users per option: {res['counts']}")
    print(
        f"  streamed in {res['chunks']} chunk(s) of up to {res['chunk_rows']:,} rows, "
        f"{res['stats']['rounds']} selection round(s)"
    )
    print(f"wrote {', '.join(res['outputs'])}")
    return 0


def _experiment(args) -> int:
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:  # every rank would run (and write) the whole grid
        raise ValueError(
            "bidfcl experiment runs in one process; under torchrun train one run at a time with "
            "`torchrun ... -m bidfcl train --config C`"
        )
    if args.combine:
        if not args.out:
            print("bidfcl experiment: --combine needs --out (where the merged table goes)", file=sys.stderr)
            return 2
        _check_writable_dir(args.out, "--out")
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
        over["experiment.seeds"] = args.seeds
    if args.methods:
        over["experiment.methods"] = args.methods
    if args.out:
        over["output.dir"] = args.out
    if args.device:
        over["train.device"] = args.device
    cfg = load_config(args.config, over)
    _threads(args.threads or cfg.output.threads)
    resolve_device(cfg.train.device, "train.device")
    _check_writable_dir(cfg.output.dir, "output.dir")
    out = run_experiment(
        cfg, cfg.output.dir, progress=Progress(args.progress or cfg.output.progress), log=lambda m: print(m, flush=True)
    )
    print()
    print(out["table"], end="")
    print(
        f"wrote {cfg.output.dir}/results.md, results.csv, curves.csv, results.json"
        + (f", {out['plot']}" if out["plot"] and out["plot"].endswith(".png") else "")
    )
    return 0


#: the learning demo's data scenario (bidfcl.data.SCENARIOS): one where the methods separate
DEMO_SCENARIO = "biased-small-rct"

#: the learning demo: a complete small experiment on built-in synthetic data (about 2 minutes on one thread);
#: [data] is replaced by ``{"scenario": --scenario}`` (the scenario's sizes)
DEMO_CONFIG = {
    "data": {"scenario": DEMO_SCENARIO},
    "model": {"hidden": [128, 64, 32]},
    "train": {"epochs": 10, "warm_start_epochs": 5, "batch_size": 1024, "lr": 1e-3},
    "bidfcl": {"teacher_epochs": 150},
    "experiment": {
        "methods": ["tsm-rct", "tsm-obs", "tsm-pooled", "dfcl-ppl", "bidfcl-ppl-fixed", "bidfcl-ppl"],
        "seeds": [0],
        "reference": "tsm-rct",
        # RCT-only models see 50x fewer rows per epoch: as many epochs as the teacher;
        # DFCL fine-tunes that TSM-on-RCT model (its warm start) with the decision loss
        "overrides": {
            "tsm-rct": {"train.epochs": 150},
            "dfcl-ppl": {"train.epochs": 30, "train.warm_start_epochs": 150},
        },
    },
    "output": {"progress": "none"},
}


def _learning_demo(args) -> int:
    _threads(args.threads)
    if args.out:
        _check_writable_dir(args.out, "--out")
    raw = {k: dict(v) for k, v in DEMO_CONFIG.items()}
    raw["experiment"] = dict(raw["experiment"], seeds=list(args.seeds))
    raw["data"] = {"scenario": args.scenario}
    if args.quick:  # a smoke run: tiny data on top of the scenario, few epochs
        raw["data"].update(n_rct=1000, n_obs=5000, n_val=1000, n_test=5000)
        raw["train"] = dict(raw["train"], epochs=2, warm_start_epochs=1)
        raw["bidfcl"] = dict(raw["bidfcl"], teacher_epochs=2, cg_iters=10)
        raw["experiment"]["overrides"] = {}
    cfg = config_from_dict(raw)
    d = synthetic_kwargs(cfg.data)
    n_rct = d.get("n_rct", 20000)
    print(
        f"bidfcl {__version__} demo: learning to allocate a budget on synthetic marketing data "
        f"with ground truth ({torch.get_num_threads()} threads)"
    )
    print(f"  data: scenario {cfg.data.scenario!r} (`bidfcl scenarios` lists them; --scenario NAME for another)")
    print(
        f"  {n_rct:,} RCT + {d.get('n_obs', 10 * n_rct):,} biased OBS users (hidden confounder), "
        f"{d.get('n_val', 20000):,} validation, {d.get('n_test', 100000):,} test; {d.get('n_options', 5)} options "
        f"({d.get('outcome', 'continuous')} revenue), option 0 free"
    )
    print(
        f"  methods: {', '.join(cfg.experiment.methods)}; seeds {cfg.experiment.seeds}; "
        f"Bi-DFCL bridge step every {cfg.bidfcl.bridge_every} batches, {cfg.bidfcl.cg_iters} CG iterations"
    )
    print("  each model is scored on the test users at 10 budgets: EOM (IPW estimate from the randomised test rows)")
    print("  and the true revenue of its allocation (known here), against TSM on RCT (= 1.0000) and the oracle")
    print()
    out = run_experiment(cfg, args.out, log=lambda m: print("  " + m, flush=True))
    print()
    print(out["table"], end="")
    print(
        f"\n({out['seconds']:.0f} s in all. Columns: EOM and true value are means over the 10 budgets divided by "
        f"the reference's; oracle gain share = (V - V_nobody) / (V_oracle - V_nobody).)"
    )
    if args.out:
        print(f"wrote {args.out}/results.md, results.csv, curves.csv, results.json")
    return 0


def _size_list(what: str, low: int):
    """``1e5,1e6`` or ``100000`` -> [100000, 1000000] (whole numbers >= low)."""

    def parse(text: str) -> list[int]:
        out = []
        for item in text.split(","):
            try:
                v = float(item)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
            if not math.isfinite(v) or v != int(v) or v < low:
                raise argparse.ArgumentTypeError(f"expected {what} as whole numbers >= {low}, got {item!r}")
            out.append(int(v))
        return out

    return parse


def _bench(args) -> int:
    _threads(args.threads)
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    rows = []
    for dt in args.dtype:
        if dt not in dtypes:
            raise UsageError(f"--dtype: expected float32 and/or float64, got {dt!r}")
    for m in args.options:
        if m > MAX_OPTIONS:
            raise UsageError(f"--options: at most {MAX_OPTIONS} options per user, got {m}")
    resolve_device(args.device, "--device")
    for n in args.users:
        for m in args.options:
            for dt in args.dtype:
                case = bench.bench_case(
                    n,
                    m,
                    dtype=dtypes[dt],
                    budgets=args.budgets,
                    device=args.device,
                    peers=args.peers,
                    repeats=args.repeats,
                    highs_max_users=args.highs_max_users,
                    bisect_max_users=args.bisect_max_users,
                    seed=args.seed,
                )
                rows += case
                if not args.json:
                    print(bench.format_rows(case), flush=True)
    if args.json:
        json.dump([r.to_dict() for r in rows], sys.stdout, indent=1)
        print()
    return 0


def _write_data(args) -> int:
    raw = {"source": "synthetic"}
    if args.scenario:
        raw["scenario"] = args.scenario
    for key, value in _parse_sets(args.set).items():
        section, _, name = key.partition(".")
        if section != "data" or not name:
            raise UsageError(f"--set {key}=...: write-data takes data.KEY=VALUE overrides only")
        raw[name] = value
    cfg = config_from_dict({"data": raw})
    _check_writable_dir(args.out, "--out")
    data = load_run_data(cfg.data)
    paths = write_splits(
        {"rct": data.rct, "obs": data.obs, "val": data.val, "test": data.test}, args.out, fmt=args.format
    )
    for name, path in paths.items():
        ds = getattr(data, name)
        print(
            f"wrote {path}: {len(ds):,} rows, features f0..f{ds.n_features - 1}, treatment (0..{ds.n_options - 1}), "
            f"revenue, cost" + (", propensity" if ds.propensity is not None else "")
        )
    return 0


def _scenarios(args) -> int:
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
        print(
            f"  oracle/TSM-RCT {ratio(s.oracle_vs_tsm_rct)}, TSM-OBS/TSM-RCT {ratio(s.tsm_obs_vs_tsm_rct)}, "
            f"TSM-pooled/TSM-RCT {ratio(s.tsm_pooled_vs_tsm_rct)}{seeds}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bidfcl", description="Budget-constrained marketing allocation, learned for the decision."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    threads_help = "torch threads (0 = torch's default); results of training depend on the thread count"
    learn = sub.add_parser(
        "demo",
        help="the main job in small: TSM (RCT/OBS/pooled), DFCL-PPL, Bi-DFCL-PPL/-PIFD on "
        "built-in synthetic data, scored against the truth (about 2 minutes)",
    )
    learn.add_argument(
        "--seeds",
        type=_int_list,
        default=[0],
        help="comma-separated seeds, e.g. 0,1,2 (one table row per method, mean over seeds)",
    )
    learn.add_argument("--threads", type=_THREADS, default=2, help="torch threads (default 2; 0 = torch's default)")
    learn.add_argument("--out", help="also write results.md/.csv, curves.csv, results.json into this folder")
    learn.add_argument("--quick", action="store_true", help="tiny data and few epochs (a smoke run, seconds)")
    learn.add_argument(
        "--scenario",
        default=DEMO_SCENARIO,
        help=f"data scenario (see `bidfcl scenarios`; default {DEMO_SCENARIO}); its sizes replace the "
        "demo's (with --quick: tiny sizes on top of it)",
    )
    learn.set_defaults(func=_learning_demo)

    demo = sub.add_parser(
        "solve-demo",
        help="solve a random 1M-user, 8-option allocation problem and report lam*, spend, value, bound and time",
    )
    demo.add_argument(
        "--users", type=_int_at_least(1, "a user count"), default=1_000_000, help="users N (default 1,000,000)"
    )
    demo.add_argument(
        "--options",
        type=_int_at_least(1, "an option count"),
        default=8,
        help=f"options M per user, option 0 free (default 8; at most {MAX_OPTIONS})",
    )
    demo.add_argument(
        "--budget-position",
        "--budget-fraction",
        dest="budget_position",
        type=_finite_float("a budget position", 0.0, 1.0),
        default=0.3,
        help="where the total budget lies between the total spend of the cheapest policy (0: "
        "everyone on the cheapest option) and of the dearest (1): budget = cheapest + position "
        "x (dearest - cheapest); not a share of any cost (default 0.3; --budget-fraction is its "
        "old name)",
    )
    demo.add_argument(
        "--method",
        choices=["exact", "bisection"],
        default="exact",
        help="exact breakpoint solve (default) or the bisection baseline",
    )
    demo.add_argument(
        "--dtype", choices=["float32", "float64"], default="float32", help="problem dtype (default float32)"
    )
    demo.add_argument("--seed", type=_int_at_least(0, "a seed"), default=0, help="seed of the random problem")
    demo.add_argument("--threads", type=_THREADS, default=0, help="torch threads (0 = torch's default)")
    demo.set_defaults(func=_solve_demo)

    tr = sub.add_parser("train", help="train one model from a TOML config (writes model.pt, metrics.json, history.csv)")
    tr.add_argument("--config", required=True, help="TOML file ([data], [model], [train], [eval], [output])")
    tr.add_argument("--out", help="output folder (overrides output.dir); checked for writing before any work")
    tr.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt if present (refused if the config or the data changed)",
    )
    tr.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a config value, value as a TOML literal (repeatable), e.g. --set train.lr=1e-3",
    )
    tr.add_argument("--threads", type=_THREADS, default=0, help=threads_help)
    tr.add_argument("--scenario", help="data scenario (sets data.scenario; see `bidfcl scenarios`)")
    tr.add_argument(
        "--device", help="where to train: auto (CUDA when present, else CPU), cpu, cuda or cuda:N (sets train.device)"
    )
    tr.add_argument(
        "--progress",
        choices=["auto", "bar", "lines", "none"],
        help="progress display (overrides output.progress; default auto: a bar on a terminal, else lines)",
    )
    tr.set_defaults(func=_train)

    ev = sub.add_parser(
        "evaluate", help="score a saved model: EOM over the budget levels (true value on synthetic data)"
    )
    ev.add_argument("--model", required=True, help="model.pt (or checkpoint.pt) written by `bidfcl train`")
    ev.add_argument("--config", help="TOML config for the data (default: the config saved with the model)")
    ev.add_argument("--split", choices=["rct", "val", "test"], help="split to score (default: eval.split)")
    ev.add_argument(
        "--budgets",
        type=_int_at_least(1, "a number of budget levels"),
        default=0,
        help="number of evenly spaced budget levels (default: the config's eval.budgets / eval.n_budgets)",
    )
    ev.add_argument("--output", help="write the evaluation as JSON to this file")
    ev.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    ev.add_argument("--threads", type=_THREADS, default=0, help="torch threads (0 = torch's default)")
    ev.set_defaults(func=_evaluate)

    al = sub.add_parser("allocate", help="score users from a Parquet/CSV file and allocate a budget")
    al.add_argument("--model", required=True, help="model.pt written by `bidfcl train`")
    al.add_argument(
        "--input",
        required=True,
        help="Parquet (.parquet/.pq) or CSV file with one row per user and the model's numeric feature "
        "columns (see --features); other columns are ignored unless named by --id-column",
    )
    al.add_argument(
        "--output",
        required=True,
        help="plan file, .csv or .parquet/.pq: id (or row), option, expected_revenue, expected_spend",
    )
    al.add_argument("--budget", type=_finite_float("a per-capita budget", 0.0), help="budget per user (per capita)")
    al.add_argument("--total-budget", type=_finite_float("a total budget", 0.0), help="total budget over all users")
    al.add_argument(
        "--features", help="comma-separated feature columns (default: the training config's, or x0..x{F-1})"
    )
    al.add_argument("--id-column", help="column copied to the output to identify users")
    al.add_argument("--threads", type=_THREADS, default=0, help="torch threads (0 = torch's default)")
    al.add_argument(
        "--chunk-rows",
        type=_int_at_least(0, "a number of rows per chunk, 0 to read all at once"),
        default=1_000_000,
        help="stream the input in chunks of this many rows (peak memory ~ chunk size; under torchrun "
        "each rank takes a contiguous row range of a Parquet input and writes its own plan part); "
        "0 reads the whole input into memory (default: 1000000)",
    )
    # constraints beyond the one budget (bidfcl.solve_allocation; parsed in bidfcl.allocation.allocate_table)
    al.add_argument(
        "--extra-cost",
        action="append",
        metavar="COLUMNS=TOTAL",
        help="another resource: its per-option costs in columns PREFIX0..PREFIX{M-1} (or M comma-separated "
        "names) and its total budget (repeatable)",
    )
    al.add_argument("--capacity", action="append", metavar="OPTION=COUNT", help="most users given OPTION (repeatable)")
    al.add_argument(
        "--eligible-columns", metavar="PREFIX", help="0/1 columns PREFIX0..PREFIX{M-1}: who may get each option"
    )
    al.add_argument(
        "--eligibility-rules", metavar="FILE", help='JSON list of {"option": m, "where": "COLUMN OP NUMBER"} rules'
    )
    al.add_argument("--group-column", help="column whose values define groups with their own budgets")
    al.add_argument(
        "--group-budget",
        action="append",
        metavar="GROUP=TOTAL",
        help="most a group may spend of the model's cost (repeatable; with --group-column)",
    )
    al.set_defaults(func=_allocate)

    ex = sub.add_parser("experiment", help="methods x seeds -> results table (Markdown, CSV) and EOM-vs-budget plot")
    ex.add_argument("--config", help="TOML config ([experiment] methods, seeds, reference, overrides)")
    ex.add_argument("--combine", help="comma-separated experiment output folders to merge into one table (no training)")
    ex.add_argument("--out", help="output folder (overrides output.dir); checked for writing before any work")
    ex.add_argument("--seeds", type=_int_list, help="comma-separated seeds, e.g. 0,1,2 (overrides experiment.seeds)")
    ex.add_argument("--methods", type=_name_list, help="comma-separated methods (overrides experiment.methods)")
    ex.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    ex.add_argument(
        "--progress",
        choices=["auto", "bar", "lines", "none"],
        help="per-epoch progress of each run (default: output.progress, auto)",
    )
    ex.add_argument("--threads", type=_THREADS, default=0, help=threads_help)
    ex.add_argument("--scenario", help="data scenario (sets data.scenario; see `bidfcl scenarios`)")
    ex.add_argument(
        "--device", help="where to train: auto (CUDA when present, else CPU), cpu, cuda or cuda:N (sets train.device)"
    )
    ex.set_defaults(func=_experiment)

    wd = sub.add_parser(
        "write-data",
        help="write a synthetic scenario's splits as Parquet/CSV tables "
        "(rct, obs, val, test; the input examples/dfcl_files.toml reads)",
    )
    wd.add_argument("--out", required=True, help="folder for rct/obs/val/test.parquet (or .csv)")
    wd.add_argument("--scenario", help="data scenario (see `bidfcl scenarios`; default: make_marketing's defaults)")
    wd.add_argument("--format", choices=["parquet", "csv"], default="parquet", help="table format (default parquet)")
    wd.add_argument(
        "--set",
        action="append",
        metavar="data.KEY=VALUE",
        help="override a [data] key (repeatable), e.g. --set data.n_rct=5000",
    )
    wd.set_defaults(func=_write_data)

    be = sub.add_parser(
        "bench",
        help="solver throughput (users/s, GB/s) of the exact solve next to one streaming "
        "pass, eager torch and numpy bisections and the HiGHS LP, measured in one run",
    )
    be.add_argument(
        "--users",
        type=_size_list("user counts", 1),
        default=[1_000_000],
        help="comma-separated problem sizes N, e.g. 1e5,1e6 (default 1e6)",
    )
    be.add_argument(
        "--options",
        type=_size_list("option counts", 1),
        default=[8],
        help=f"comma-separated options per user M (default 8; at most {MAX_OPTIONS})",
    )
    be.add_argument("--dtype", type=_name_list, default=["float32"], help="float32 and/or float64 (default float32)")
    be.add_argument(
        "--budgets",
        type=_int_at_least(1, "a budget count"),
        default=1,
        help="K budgets per problem, solved in one exact call, between 10%% and 90%% of the range (default 1)",
    )
    be.add_argument(
        "--peers",
        type=_name_list,
        default=list(PEERS),
        help=f"implementations to time (default all: {','.join(PEERS)})",
    )
    be.add_argument(
        "--repeats",
        type=_int_at_least(1, "a repeat count"),
        default=5,
        help="timed repetitions after a warm-up; the median is reported (default 5)",
    )
    be.add_argument(
        "--highs-max-users",
        type=_int_at_least(0, "a user count"),
        default=10_000,
        help="largest N for the HiGHS LP relaxation (default 10000; it is far slower)",
    )
    be.add_argument(
        "--bisect-max-users",
        type=_int_at_least(0, "a user count"),
        default=None,
        help="largest N for the two bisections (default: no limit)",
    )
    be.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    be.add_argument("--threads", type=_THREADS, default=0, help="torch threads (0 = torch's default)")
    be.add_argument("--seed", type=_int_at_least(0, "a seed"), default=0, help="seed of the random problems")
    be.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    be.set_defaults(func=_bench)

    sc = sub.add_parser("scenarios", help="list the named data scenarios with their sizes and measured headroom")
    sc.set_defaults(func=_scenarios)
    return parser


def _run(args) -> int:
    try:
        rc = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not as an "Exception ignored" at exit
        return rc
    except SystemExit:
        raise
    except BrokenPipeError:  # `bidfcl scenarios | head`: the reader left; not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        print(f"bidfcl {args.command}: interrupted", file=sys.stderr)
        return 130
    except (
        ConfigError,
        DataError,
        UsageError,
        FileNotFoundError,
        ValueError,
        TypeError,
        MissingDependencyError,
    ) as exc:
        if os.environ.get("BIDFCL_DEBUG"):
            raise
        msg = str(exc)
        print(msg if msg.startswith("bidfcl") else f"bidfcl {args.command}: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file system error: name the file
        if os.environ.get("BIDFCL_DEBUG"):
            raise
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        print(f"bidfcl {args.command}: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"bidfcl {args.command}: out of memory; use smaller data or sizes", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001  (the last line of defence: one line, never a traceback)
        if os.environ.get("BIDFCL_DEBUG"):
            raise
        print(
            f"bidfcl {args.command}: internal error ({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}); "
            f"rerun with BIDFCL_DEBUG=1 for the traceback and please report it",
            file=sys.stderr,
        )
        return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _run(args)
