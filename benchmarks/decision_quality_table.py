"""The decision-quality table across scenarios, from `bidfcl experiment` outputs.

Each scenario is one experiment run of ``examples/decision_quality.toml`` (five seeds)::

    for s in default biased-small-rct strong-selection many-options binary heavy-tail; do
      python -m bidfcl experiment --config examples/decision_quality.toml --scenario $s --threads 1 --out runs/dq/$s
    done
    python benchmarks/decision_quality_table.py runs/dq/*

(an argument ``A,B`` merges two outputs of one scenario, runs in B replacing those of A).

Per scenario: true value / TSM-RCT (mean +- SE over seeds) of every method and of the oracle; the
best baseline (the method among TSM on RCT / OBS / pooled and DFCL with the highest mean); paired
t-tests across seeds of the learned-bridge Bi-DFCL against the fixed-gate Bi-DFCL and against the
best baseline; the share of the oracle's headroom over TSM-RCT that Bi-DFCL reaches; budgets any
model could not allocate; and one Bi-DFCL epoch / one pooled-TSM epoch.
"""

from __future__ import annotations

import json
import os
import sys

from bidfcl.train.experiment import _mean_se, paired_test

BASELINES = ("tsm-rct", "tsm-obs", "tsm-pooled", "dfcl-ppl")


def load_runs(folder: str) -> list[dict]:
    name = "results.json" if os.path.exists(os.path.join(folder, "results.json")) else "partial.json"
    with open(os.path.join(folder, name)) as fh:
        return json.load(fh)["runs"]


def scenario_rows(folders: str) -> dict:
    """``folders``: one experiment output, or several joined by commas whose later runs replace
    earlier runs of the same (method, seed) (e.g. a method rerun after a change)."""
    merged = {}
    for folder in folders.split(","):
        merged.update({(r["method"], r["seed"]): r for r in load_runs(folder)})
    folder = folders.split(",")[0]
    runs = list(merged.values())
    full = {r["seed"] for r in runs if r["method"] == "bidfcl-ppl"} or {r["seed"] for r in runs}
    runs = [r for r in runs if r["seed"] in full]  # a stopped experiment: its completed seeds
    seeds = sorted(full)
    by = {(r["method"], r["seed"]): r for r in runs}
    methods = [m for m in dict.fromkeys(r["method"] for r in runs)]
    ref = {s: by[("tsm-rct", s)]["evaluation"]["true_value_mean"] for s in seeds}
    rel = {m: [by[(m, s)]["evaluation"]["true_value_mean"] / ref[s] for s in seeds if (m, s) in by] for m in methods}
    rel["oracle"] = [by[("tsm-rct", s)]["evaluation"]["oracle_value_mean"] / ref[s] for s in seeds]
    best = max((m for m in BASELINES if m in rel), key=lambda m: _mean_se(rel[m])[0])
    out = {"name": os.path.basename(folder.rstrip("/")), "seeds": len(seeds), "rel": rel, "best": best}
    if "bidfcl-ppl" in rel:
        b = rel["bidfcl-ppl"]
        out["vs_fixed"] = paired_test(b, rel["bidfcl-ppl-fixed"]) if "bidfcl-ppl-fixed" in rel else None
        out["vs_best"] = paired_test(b, rel[best])
        out["wins_best"] = sum(x > y for x, y in zip(b, rel[best]))
        head = _mean_se(rel["oracle"])[0] - 1
        out["headroom_share"] = (_mean_se(b)[0] - 1) / head if head > 0 else float("nan")
    out["infeasible"] = sum(r["evaluation"].get("n_infeasible", 0) for r in runs)
    return out


def fmt(v) -> str:
    m, se = _mean_se(v)
    return f"{m:.4f} ± {se:.4f}"


def main(folders: list[str]) -> None:
    rows = [scenario_rows(f) for f in folders]
    methods = [
        m
        for m in ("tsm-obs", "tsm-pooled", "dfcl-ppl", "bidfcl-ppl-fixed", "bidfcl-ppl", "bidfcl-ppl-lr1e-2", "oracle")
        if any(m in r["rel"] for r in rows)
    ]
    print(
        "| scenario | seeds | " + " | ".join(methods) + " | best baseline | Bi-DFCL - best (t, p, wins) "
        "| Bi-DFCL - fixed gates (t, p) | headroom share | infeasible |"
    )
    print("|" + "---|" * (len(methods) + 7))
    for r in rows:
        cells = [r["name"], str(r["seeds"])] + [fmt(r["rel"][m]) if m in r["rel"] else "-" for m in methods]
        cells.append(r["best"])
        vb, vf = r.get("vs_best"), r.get("vs_fixed")
        cells.append(
            f"{_mean_se(r['rel']['bidfcl-ppl'])[0] - _mean_se(r['rel'][r['best']])[0]:+.4f} "
            f"(t {vb[0]:.2f}, p {vb[1]:.3g}, {r['wins_best']}/{r['seeds']})"
            if vb
            else "-"
        )
        cells.append(
            f"{_mean_se(r['rel']['bidfcl-ppl'])[0] - _mean_se(r['rel']['bidfcl-ppl-fixed'])[0]:+.4f} "
            f"(t {vf[0]:.2f}, p {vf[1]:.3g})"
            if vf
            else "-"
        )
        cells += [f"{r.get('headroom_share', float('nan')):.2f}", str(r["infeasible"])]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
