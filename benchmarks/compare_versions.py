"""One method at two code versions (or settings), seed by seed, from `bidfcl experiment` outputs.

Each argument pair is a scenario's output folder from the old and the new run (both with the
reference method, TSM on RCT, and the compared method; the same seeds)::

    PYTHONPATH=python python benchmarks/compare_versions.py [--method bidfcl-ppl] OLD/S1 NEW/S1 OLD/S2 NEW/S2 ...
    PYTHONPATH=python python benchmarks/compare_versions.py --root OLD_ROOT NEW_ROOT   # every scenario in both

Per scenario: true value / TSM-RCT (mean +- SE over seeds) of the method in the old and the new
run, the paired difference new - old (mean +- SE, t, two-sided p, seeds where new > old), and
over all scenarios the same for the pooled pairs. The TSM-RCT reference of each seed is taken from
its own run, so a change that touched the reference too shows up in its column.
"""

from __future__ import annotations

import argparse
import json
import os

from bidfcl.train.experiment import _mean_se, paired_test


def relative_values(folder: str, method: str) -> dict:
    """``{seed: true value of method / true value of tsm-rct}`` of one experiment output."""
    path = os.path.join(folder, "results.json")
    if not os.path.exists(path):
        raise SystemExit(f"compare_versions: expected {path} (a finished `bidfcl experiment` output)")
    with open(path) as fh:
        runs = json.load(fh)["runs"]
    by = {(r["method"], r["seed"]): r["evaluation"]["true_value_mean"] for r in runs}
    seeds = sorted(s for (m, s) in by if m == method)
    missing = [s for s in seeds if ("tsm-rct", s) not in by]
    if not seeds or missing:
        raise SystemExit(
            f"compare_versions: {folder}: expected runs of {method!r} and 'tsm-rct' for the same seeds, "
            f"got {method!r} seeds {seeds}, tsm-rct missing for {missing}"
        )
    return {s: by[(method, s)] / by[("tsm-rct", s)] for s in seeds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="bidfcl-ppl")
    ap.add_argument("--root", action="store_true", help="the two arguments are roots holding one folder per scenario")
    ap.add_argument("folders", nargs="+")
    args = ap.parse_args()
    if args.root:
        if len(args.folders) != 2:
            raise SystemExit("compare_versions: --root takes two folders, OLD_ROOT NEW_ROOT")
        old_root, new_root = args.folders
        names = sorted(
            n
            for n in os.listdir(old_root)
            if os.path.exists(os.path.join(new_root, n, "results.json"))
            and os.path.exists(os.path.join(old_root, n, "results.json"))
        )
        pairs = [(os.path.join(old_root, n), os.path.join(new_root, n)) for n in names]
    else:
        if len(args.folders) % 2:
            raise SystemExit("compare_versions: expected folders in OLD NEW pairs")
        pairs = list(zip(args.folders[::2], args.folders[1::2]))
    print(f"| scenario | seeds | {args.method} old | {args.method} new | new - old (t, p, new > old) |")
    print("|---|---|---|---|---|")
    all_old, all_new = [], []
    for old_dir, new_dir in pairs:
        old, new = relative_values(old_dir, args.method), relative_values(new_dir, args.method)
        seeds = sorted(set(old) & set(new))
        a, b = [new[s] for s in seeds], [old[s] for s in seeds]
        all_new += a
        all_old += b
        print(row(os.path.basename(new_dir.rstrip("/")), a, b))
    if len(pairs) > 1:
        print(row(f"all {len(pairs)} scenarios (pooled pairs)", all_new, all_old))


def row(name: str, new: list, old: list) -> str:
    (mo, so), (mn, sn) = _mean_se(old), _mean_se(new)
    md, sd = _mean_se([x - y for x, y in zip(new, old)])
    t, p = paired_test(new, old)
    wins = sum(x > y for x, y in zip(new, old))
    return (
        f"| {name} | {len(new)} | {mo:.4f} ± {so:.4f} | {mn:.4f} ± {sn:.4f} | "
        f"{md:+.4f} ± {sd:.4f} (t {t:.2f}, p {p:.3g}, {wins}/{len(new)}) |"
    )


if __name__ == "__main__":
    main()
