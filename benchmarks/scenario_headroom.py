"""How far apart can methods be on each data scenario? TSM on RCT / OBS / pooled vs the oracle.

For every scenario in :data:`bidfcl.data.SCENARIOS` and every seed s, draws the scenario's sample
``seed = s`` (same world), trains the two-stage model (MLP 128-64-32, batch 1024, Adam 1e-3,
train.seed = s) on the RCT rows (``--rct-epochs``, default 150), on the OBS rows and on both pooled
(``--epochs``, default 10; both as in ``examples/decision_quality.toml``), with the project's trainers (``bidfcl.train.make_trainer``; model
selection on the validation split by EOM, as in ``bidfcl experiment``) and scores each on the test
split at the evaluation's 10 budget levels. Reported, per scenario as mean +- standard error over
seeds, of the true per-capita revenue V (mean over the budget levels):

    oracle/TSM-RCT = V_oracle / V_tsm-rct       headroom over the RCT-only baseline
    TSM-OBS/TSM-RCT = V_tsm-obs / V_tsm-rct     < 1: the biased log misleads a plain model
    TSM-pooled/TSM-RCT = V_tsm-pooled / V_tsm-rct

These are the numbers recorded in the Scenario records (``bidfcl scenarios``) and in the README's
"Scenarios" table. Run (one thread, about a minute per scenario and seed)::

    PYTHONPATH=python python benchmarks/scenario_headroom.py --seeds 0,1,2,3,4 --threads 1 --out runs/headroom

writes ``headroom.json`` (every run) and ``headroom.md`` (the table) into ``--out``; results of
finished (scenario, seed) pairs are kept in ``headroom.json`` as it goes. Runs made in parts
(other scenarios or seeds, other processes) merge into one table without training::

    python benchmarks/scenario_headroom.py --combine runs/h0,runs/h1 --out runs/headroom
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from bidfcl.data import SCENARIOS
from bidfcl.train import config_from_dict, load_run_data, make_trainer

METHODS = ("tsm-rct", "tsm-obs", "tsm-pooled")


def run_config(scenario: str, data: str, epochs: int, seed: int):
    return config_from_dict(
        {
            "data": {"scenario": scenario},
            "model": {"hidden": [128, 64, 32]},
            "train": {"method": "tsm", "epochs": epochs, "batch_size": 1024, "lr": 1e-3, "seed": seed},
            "tsm": {"data": data},
            "output": {"progress": "none"},
        }
    )


def mean_se(v: list[float]) -> tuple[float, float]:
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v))


def _ratio(by_seed: dict, seeds: list, key: str, method: str) -> list[float]:
    """Per seed: ``method``'s ``key`` over TSM-RCT's true value mean."""
    return [by_seed[s][method][key] / by_seed[s]["tsm-rct"]["true_value_mean"] for s in seeds]


def summarize(runs: list[dict], scenarios: list[str]) -> list[dict]:
    rows = []
    for name in scenarios:
        by_seed: dict = {}
        for r in runs:
            if r["scenario"] == name:
                by_seed.setdefault(r["seed"], {})[r["method"]] = r
        seeds = sorted(s for s, d in by_seed.items() if all(m in d for m in METHODS))
        if not seeds:
            continue
        rows.append(
            {
                "scenario": name,
                "seeds": seeds,
                "oracle": mean_se(_ratio(by_seed, seeds, "oracle_value_mean", "tsm-rct")),
                "tsm-obs": mean_se(_ratio(by_seed, seeds, "true_value_mean", "tsm-obs")),
                "tsm-pooled": mean_se(_ratio(by_seed, seeds, "true_value_mean", "tsm-pooled")),
                "pooled_epoch_s": mean_se([by_seed[s]["tsm-pooled"]["epoch_seconds"] for s in seeds]),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    f = lambda ms: f"{ms[0]:.4f} ± {ms[1]:.4f}" if math.isfinite(ms[1]) else f"{ms[0]:.4f}"  # noqa: E731
    out = [
        "| scenario | seeds | oracle/TSM-RCT | TSM-OBS/TSM-RCT | TSM-pooled/TSM-RCT | pooled epoch (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['scenario']} | {len(r['seeds'])} | {f(r['oracle'])} | {f(r['tsm-obs'])} | "
            f"{f(r['tsm-pooled'])} | {r['pooled_epoch_s'][0]:.2f} |"
        )
    return "\n".join(out) + "\n"


def combine(dirs: list[str], out: str) -> None:
    """Merge the runs of several output folders (a later folder's (scenario, seed, method) wins)."""
    merged: dict = {}
    for d in dirs:
        with open(os.path.join(d, "headroom.json")) as fh:
            for r in json.load(fh)["runs"]:
                merged[(r["scenario"], r["seed"], r["method"])] = r
    runs = list(merged.values())
    scenarios = [s for s in SCENARIOS if any(r["scenario"] == s for r in runs)]
    table = markdown(summarize(runs, scenarios))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "headroom.json"), "w") as fh:
        json.dump({"combined": dirs, "runs": runs}, fh, indent=1)
    with open(os.path.join(out, "headroom.md"), "w") as fh:
        fh.write(table)
    print(table, end="")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated names (default: all)")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--rct-epochs", type=int, default=150)
    p.add_argument("--epochs", type=int, default=10, help="epochs of TSM on OBS and pooled")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/headroom")
    p.add_argument("--combine", help="comma-separated output folders whose headroom.json to merge (no training)")
    args = p.parse_args()
    if args.combine:
        return combine([d for d in args.combine.split(",") if d], args.out)
    torch.set_num_threads(args.threads)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"scenario_headroom: unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    os.makedirs(args.out, exist_ok=True)
    runs: list[dict] = []
    for name in scenarios:
        for seed in seeds:
            t0 = time.perf_counter()
            data = load_run_data(run_config(name, "rct", 1, seed).data, seed_offset=seed)
            for method, (split, epochs) in zip(
                METHODS, (("rct", args.rct_epochs), ("obs", args.epochs), ("pooled", args.epochs))
            ):
                cfg = run_config(name, split, epochs, seed)
                t1 = time.perf_counter()
                result = make_trainer(cfg, data).fit()
                ev = result["evaluation"]
                main_epochs = [v for k, v in result["epoch_seconds"].items() if k != "teacher"]
                runs.append(
                    {
                        "scenario": name,
                        "seed": seed,
                        "method": method,
                        "epochs": epochs,
                        "true_value_mean": ev["true_value_mean"],
                        "oracle_value_mean": ev["oracle_value_mean"],
                        "eom_mean": ev["eom_mean"],
                        "fit_seconds": time.perf_counter() - t1,
                        "epoch_seconds": main_epochs[-1] if main_epochs else float("nan"),
                    }
                )
                print(
                    f"{name:<18} seed {seed} {method:<11} true {ev['true_value_mean']:.4f} "
                    f"oracle {ev['oracle_value_mean']:.4f} ({time.perf_counter() - t1:.1f} s)",
                    flush=True,
                )
            with open(os.path.join(args.out, "headroom.json"), "w") as fh:
                json.dump({"args": vars(args), "runs": runs}, fh, indent=1)
            print(f"{name:<18} seed {seed} done in {time.perf_counter() - t0:.1f} s", flush=True)
    table = markdown(summarize(runs, scenarios))
    with open(os.path.join(args.out, "headroom.md"), "w") as fh:
        fh.write(table)
    print()
    print(table, end="")


if __name__ == "__main__":
    main()
