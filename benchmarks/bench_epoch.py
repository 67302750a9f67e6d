"""One Bi-DFCL epoch against one pooled-TSM epoch, on one thread, on the biased-small-RCT data
(2k RCT + 100k OBS rows, batch 1024, MLP 128-64-32).

    PYTHONPATH=python python benchmarks/bench_epoch.py [--repeats 3] [--set train.KEY=VALUE ...]
    PYTHONPATH=python python benchmarks/bench_epoch.py --compare [--cpu] [--repeats 3]

Prints the median main-phase epoch time of each and their ratio. Only configuration keys that every
bidfcl version has are used, so the same script times an older checkout too. ``--compare`` times,
interleaved within each repeat (a load spike on a shared machine then hits all alike), the pooled
TSM epoch and the Bi-DFCL variants of the README's cost table: the default, the default before
issue 12 (``auto`` curvature, CG(10), a bridge step every 5 batches at lr 1e-3), the other
curvatures, and fixed gates. ``--cpu`` measures CPU time instead of wall time (steadier on a
loaded machine; see :func:`epoch_cpu_seconds`).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

DATA = {
    "base_scale": 0.1,
    "n_rct": 2000,
    "n_val": 1000,
    "n_obs": 100000,
    "n_test": 2000,
    "confounding": 3.0,
    "u_strength": 1.0,
    "revenue_noise": 0.8,
}


def epoch_seconds(train: dict, epochs: int) -> float:
    from bidfcl.train import config_from_dict, load_run_data, make_trainer
    from bidfcl.train.config import upgrade_run_config  # the variants name keys in one flat [train]

    cfg = config_from_dict(
        upgrade_run_config(
            {
                "data": DATA,
                "train": dict(train, epochs=epochs, batch_size=1024),
                "eval": {"select": "last"},
                "output": {"progress": "none"},
            }
        )
    )
    tr = make_trainer(cfg, load_run_data(cfg.data))
    res = tr.fit()
    main = [k for k in res["epoch_seconds"] if k not in ("teacher",) and not k.endswith("warm")]
    return res["epoch_seconds"][main[-1]]


#: Bi-DFCL variants timed by ``--compare`` (train keys on top of the defaults).
VARIANTS = {
    "default": {},
    "before issue 12 (auto, CG(10), k = 5, lr 1e-3)": {"curvature": "auto", "cg_iters": 10, "k": 5, "bridge_lr": 1e-3},
    "k = 10, lr 2e-3 (Gauss-Newton, CG(3))": {"k": 10, "bridge_lr": 2e-3},
    "exact Hessian (k = 20, CG(3))": {"curvature": "hessian"},
    "fixed gates": {"learn_bridge": False},
}


def compare(repeats: int, epochs: int, cpu: bool = False) -> None:
    times: dict[str, list] = {"pooled": [], **{name: [] for name in VARIANTS}}
    timer = epoch_cpu_seconds if cpu else epoch_seconds
    for _ in range(repeats):
        times["pooled"].append(timer({"method": "tsm", "data": "pooled"}, epochs))
        for name, extra in VARIANTS.items():
            times[name].append(
                timer({"method": "bidfcl", "teacher_epochs": 2, "warm_start_epochs": 1, **extra}, epochs)
            )
    p = statistics.median(times["pooled"])
    print(f"pooled TSM epoch {p:.3f} {'CPU ' if cpu else ''}s (median of {repeats})")
    for name in VARIANTS:
        b = statistics.median(times[name])
        print(f"  Bi-DFCL {name:50s} {b:7.3f} s  ratio {b / p:5.2f}x")


def epoch_cpu_seconds(train: dict, epochs: int) -> float:
    """CPU time (``time.process_time``) of one main-phase epoch: the CPU time of a run with
    ``epochs + 2`` main epochs minus that of a run with ``epochs``, over 2. On one thread this
    counts the work done, not the time spent waiting for a shared machine's cores (cache and
    memory-bandwidth contention still add to it)."""
    from bidfcl.train import config_from_dict, load_run_data, make_trainer
    from bidfcl.train.config import upgrade_run_config  # the variants name keys in one flat [train]

    cpu = []
    for n in (epochs, epochs + 2):
        cfg = config_from_dict(
            upgrade_run_config(
                {
                    "data": DATA,
                    "train": dict(train, epochs=n, batch_size=1024),
                    "eval": {"select": "last"},
                    "output": {"progress": "none"},
                }
            )
        )
        tr = make_trainer(cfg, load_run_data(cfg.data))
        start = time.process_time()
        tr.fit()
        cpu.append(time.process_time() - start)
    return (cpu[1] - cpu[0]) / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="train.KEY=VALUE")
    ap.add_argument("--compare", action="store_true", help="time the variants of the README's cost table")
    ap.add_argument(
        "--cpu",
        action="store_true",
        help="with --compare: CPU time per epoch (process_time), from runs with --epochs and --epochs + 2 main epochs",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.compare:
        compare(args.repeats, args.epochs, args.cpu)
        return
    extra = {}
    for item in args.set:
        key, value = item.split("=", 1)
        extra[key.split(".", 1)[1]] = eval(value, {}, {"true": True, "false": False})  # noqa: S307 (numbers/bools)
    pooled, bilevel = [], []
    for _ in range(args.repeats):
        pooled.append(epoch_seconds({"method": "tsm", "data": "pooled"}, args.epochs))
        bilevel.append(
            epoch_seconds({"method": "bidfcl", "teacher_epochs": 2, "warm_start_epochs": 1, **extra}, args.epochs)
        )
        time.sleep(0.1)
    p, b = statistics.median(pooled), statistics.median(bilevel)
    print(f"pooled TSM epoch {p:.3f} s, Bi-DFCL epoch {b:.3f} s (median of {args.repeats}): ratio {b / p:.2f}x")


if __name__ == "__main__":
    main()
