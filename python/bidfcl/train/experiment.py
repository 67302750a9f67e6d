"""Methods x seeds on one benchmark -> a results table (Markdown, CSV, JSON) and an EOM-vs-budget plot.

Seed s draws a fresh sample of the same world (``data.seed + s``; ``world_seed`` fixed) and trains
every method with ``train.seed + s``. Per run, the test split is scored at the same budget levels
(:mod:`bidfcl.train.evaluate`). Per method the table reports, as mean +- standard error over seeds:

* ``EOM/ref``: IPW EOM (mean over budgets) divided by the reference method's on the same seed
  (TSM-SL on RCT by default = 1.0000, the papers' normalisation);
* ``true/ref``: the same ratio of the true per-capita revenue (synthetic data);
* ``gain share``: share of the oracle's gain over "nobody treated" that the policy reaches;
* a paired t-test across seeds of the true value (else EOM) against the reference;
* on synthetic data a last row, the oracle (the best policy from the true r, c at the same
  budgets): the ceiling of ``true/ref``.

Method names are presets (:func:`bidfcl.train.registry.presets`: ``<method>-<loss>`` for every
registered method and decision loss, plus each method's own, e.g. ``tsm-rct``) or any name given in ``experiment.overrides`` with its
own ``train.method``; ``experiment.overrides = {name = {"train.epochs" = 5}}`` adjusts a preset.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from typing import Optional

from .._optional import MissingDependencyError, require
from .config import ConfigError, RunConfig, config_from_dict
from .datasets import RunData, as_run_data, load_run_data
from .loop import Progress, _atomic_text
from .registry import presets

__all__ = ["presets", "method_config", "run_experiment", "combine_results", "summarize", "markdown_table"]


def method_config(cfg: RunConfig, name: str, seed: int) -> RunConfig:
    """The run config of method ``name`` at experiment seed ``seed``."""
    extra = cfg.experiment.overrides.get(name, {})
    if not isinstance(extra, dict):
        raise ConfigError(f"bidfcl config: expected experiment.overrides.{name} to be a table, got {extra!r}")
    known = presets()
    if name not in known and "train.method" not in extra:
        raise ConfigError(
            f"bidfcl config: unknown method {name!r} in experiment.methods (presets: "
            f"{', '.join(known)}; or define it in experiment.overrides with 'train.method')"
        )
    over = dict(known.get(name, {}))
    over.update(extra)
    over["train.seed"] = cfg.train.seed + seed
    return cfg.replace(over)


def preset_notes(cfg: RunConfig) -> list[str]:
    """One line per config value that a method's preset replaces (e.g. the config says
    ``tsm.data = "obs"`` and preset ``tsm-rct`` sets ``"rct"``): an experiment never overrides what
    a config file says without saying so."""
    default = RunConfig().to_dict()
    mine = cfg.to_dict()
    notes = []
    known = presets()
    for name in cfg.experiment.methods:
        over = dict(known.get(name, {}))
        over.update(
            cfg.experiment.overrides.get(name, {}) if isinstance(cfg.experiment.overrides.get(name), dict) else {}
        )
        for dotted, value in over.items():
            if dotted == "train.seed" or "." not in dotted:
                continue
            section, key = dotted.split(".", 1)
            have = mine.get(section, {}).get(key)
            if have != default.get(section, {}).get(key) and have != value:
                notes.append(
                    f"note: method {name!r} sets {dotted} = {value!r}; the config's {have!r} is not used for it"
                )
    return notes


def _teacher_key(cfg: RunConfig, seed: int, epochs: int) -> str:
    t = cfg.train
    return json.dumps(
        [
            seed,
            cfg.model.__dict__,
            t.lr,
            t.batch_size,
            t.weight_decay,
            t.seed,
            epochs,
            cfg.eval.select,
            cfg.eval.every,
            cfg.eval.n_budgets,
        ],
        sort_keys=True,
        default=str,
    )


def _mean_se(values: list[float]) -> tuple[float, float]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return float("nan"), float("nan")
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in v) / (len(v) - 1)
    return m, math.sqrt(var / len(v))


def paired_test(a: list[float], b: list[float]) -> tuple[float, float]:
    """Paired t-test of ``a - b`` across seeds -> ``(t, two-sided p)`` (NaN with fewer than 2 pairs)."""
    d = [x - y for x, y in zip(a, b)]
    if len(d) < 2:
        return float("nan"), float("nan")
    m, se = _mean_se(d)
    if not se > 0:
        return (float("inf") if m > 0 else float("-inf") if m < 0 else float("nan")), (0.0 if m else 1.0)
    t = m / se
    try:
        from scipy import stats  # noqa: PLC0415 (optional dependency (an extra), imported where used)

        p = float(2 * stats.t.sf(abs(t), len(d) - 1))
    except ImportError:  # normal approximation
        p = math.erfc(abs(t) / math.sqrt(2))
    return t, p


def summarize(runs: list[dict], methods: list[str], reference: str) -> list[dict]:
    """One row per method from the per-run records of :func:`run_experiment`."""
    by = {(r["seed"], r["method"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    has_truth = all("true_value_mean" in r["evaluation"] for r in runs)
    rows = []
    for m in methods:
        rel_eom, rel_true, gain, epoch_s, fit_s, aucc, mine, refs = [], [], [], [], [], [], [], []
        infeasible = 0
        for s in seeds:
            r, ref = by.get((s, m)), by.get((s, reference))
            if r is None:
                continue
            ev = r["evaluation"]
            if ref is not None:
                rel_eom.append(ev["eom_mean"] / ref["evaluation"]["eom_mean"])
                key = "true_value_mean" if has_truth else "eom_mean"
                mine.append(ev[key])
                refs.append(ref["evaluation"][key])
                if has_truth:
                    rel_true.append(ev["true_value_mean"] / ref["evaluation"]["true_value_mean"])
            if has_truth:
                gain.append(ev["gain_share_mean"])
            if "aucc" in ev:
                aucc.append(ev["aucc"])
            epoch_s.append(r["main_epoch_seconds"])
            fit_s.append(r["fit_seconds"])
            infeasible += int(ev.get("n_infeasible", 0))
        t, p = paired_test(mine, refs) if m != reference else (float("nan"), float("nan"))
        row = {
            "method": m,
            "seeds": len(fit_s),
            "eom_rel": _mean_se(rel_eom),
            "true_rel": _mean_se(rel_true),
            "gain_share": _mean_se(gain),
            "aucc": _mean_se(aucc),
            "t_vs_ref": t,
            "p_vs_ref": p,
            "epoch_seconds": _mean_se(epoch_s)[0],
            "fit_seconds": _mean_se(fit_s)[0],
            "infeasible": infeasible,
        }
        rows.append(row)
    if has_truth and any((s, reference) in by for s in seeds):
        # the ceiling: the oracle policy from the true r, c at the same budgets (no EOM: it is not
        # a model scored on the RCT rows)
        rel = [
            by[(s, reference)]["evaluation"]["oracle_value_mean"] / by[(s, reference)]["evaluation"]["true_value_mean"]
            for s in seeds
            if (s, reference) in by
        ]
        nan = (float("nan"), float("nan"))
        rows.append(
            {
                "method": "oracle (true r, c)",
                "seeds": len(rel),
                "eom_rel": nan,
                "true_rel": _mean_se(rel),
                "gain_share": (1.0, float("nan")),
                "aucc": nan,
                "t_vs_ref": float("nan"),
                "p_vs_ref": float("nan"),
                "epoch_seconds": float("nan"),
                "fit_seconds": float("nan"),
                "infeasible": 0,
            }
        )
    return rows


def pairwise_table(runs: list[dict], methods: list[str]) -> str:
    """Paired comparisons across seeds: every Bi-DFCL method against every other method, on the true
    value (synthetic data) or else EOM: mean relative difference, t and two-sided p."""
    by = {(r["seed"], r["method"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    key = "true_value_mean" if all("true_value_mean" in r["evaluation"] for r in runs) else "eom_mean"
    ours = [m for m in methods if m.startswith("bidfcl")]
    others = [m for m in methods if not m.startswith("bidfcl")]
    if not ours or not others or len(seeds) < 2:
        return ""
    lines = [
        f"| {key.replace('_mean', '').replace('_', ' ')}: A vs B | seeds | mean (A - B) / B | wins | t | p |",
        "|---|---|---|---|---|---|",
    ]
    for a in ours:
        for b in others:
            pairs = [
                (by[(s, a)]["evaluation"][key], by[(s, b)]["evaluation"][key])
                for s in seeds
                if (s, a) in by and (s, b) in by
            ]
            if len(pairs) < 2:
                continue
            rel = _mean_se([x / y - 1.0 for x, y in pairs])
            t, p = paired_test([x for x, _ in pairs], [y for _, y in pairs])
            wins = sum(x > y for x, y in pairs)
            lines.append(
                f"| {a} vs {b} | {len(pairs)} | {rel[0]:+.2%} ± {rel[1]:.2%} | {wins}/{len(pairs)} | "
                f"{t:.2f} | {p:.3g} |"
            )
    return "\n".join(lines) + "\n"


def _fmt(ms: tuple[float, float], digits: int = 4) -> str:
    m, se = ms
    if not math.isfinite(m):
        return "-"
    return f"{m:.{digits}f}" + (f" ± {se:.{digits}f}" if math.isfinite(se) else "")


def markdown_table(rows: list[dict], reference: str) -> str:
    show_aucc = any(math.isfinite(r["aucc"][0]) for r in rows)
    head = ["method", "seeds", f"EOM / {reference}", f"true value / {reference}", "oracle gain share"]
    head += (["AUCC"] if show_aucc else []) + [f"paired t vs {reference}", "p", "s / epoch", "s / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], str(r["seeds"]), _fmt(r["eom_rel"]), _fmt(r["true_rel"]), _fmt(r["gain_share"], 3)]
        if show_aucc:
            cells.append(_fmt(r["aucc"]))
        t, p = r["t_vs_ref"], r["p_vs_ref"]
        cells += [
            f"{t:.2f}" if math.isfinite(t) else "-",
            f"{p:.3g}" if math.isfinite(p) else "-",
            f"{r['epoch_seconds']:.2f}" if math.isfinite(r["epoch_seconds"]) else "-",
            f"{r['fit_seconds']:.1f}" if math.isfinite(r["fit_seconds"]) else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    bad = [f"{r['method']} ({r['infeasible']})" for r in rows if r.get("infeasible")]
    if bad:  # never a silent fallback: say which models could not allocate some budgets
        lines.append("")
        lines.append(
            "Budgets a model could not allocate (its cheapest predicted policy overspends; scored as "
            "everyone on the cheapest arm), summed over seeds: " + ", ".join(bad)
        )
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    keys = [
        "method",
        "seeds",
        "eom_rel",
        "eom_rel_se",
        "true_rel",
        "true_rel_se",
        "gain_share",
        "gain_share_se",
        "aucc",
        "aucc_se",
        "t_vs_ref",
        "p_vs_ref",
        "epoch_seconds",
        "fit_seconds",
    ]
    w = csv.writer(buf)
    w.writerow(keys)
    for r in rows:
        w.writerow(
            [
                r["method"],
                r["seeds"],
                *r["eom_rel"],
                *r["true_rel"],
                *r["gain_share"],
                *r["aucc"],
                r["t_vs_ref"],
                r["p_vs_ref"],
                r["epoch_seconds"],
                r["fit_seconds"],
            ]
        )
    return buf.getvalue()


def _curves_csv(runs: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["seed", "method", "budget", "eom", "eom_se", "true_value", "oracle_value"])
    for r in runs:
        ev = r["evaluation"]
        for k, b in enumerate(ev["budgets"]):
            w.writerow(
                [
                    r["seed"],
                    r["method"],
                    b,
                    ev["eom"][k],
                    ev["eom_se"][k],
                    ev["true_value"][k] if "true_value" in ev else "",
                    ev["oracle_value"][k] if "oracle_value" in ev else "",
                ]
            )
    return buf.getvalue()


def plot_curves(runs: list[dict], methods: list[str], path: str) -> Optional[str]:
    """EOM (and true value) vs budget per method, mean over seeds; returns a message if skipped."""
    try:
        require("matplotlib", extra="plot", feature="the EOM-vs-budget plot").use("Agg")
        plt = require("matplotlib.pyplot", extra="plot", feature="the EOM-vs-budget plot")
    except MissingDependencyError as exc:  # the tables are written all the same
        return f"{exc}; skipped the plot"
    keys = [("eom", "EOM (IPW revenue per capita)")]
    if all("true_value" in r["evaluation"] for r in runs):
        keys.append(("true_value", "true revenue per capita"))
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], keys):
        for m in methods:
            rs = [r for r in runs if r["method"] == m]
            if not rs:
                continue
            b = rs[0]["evaluation"]["budgets"]
            y = [sum(r["evaluation"][key][k] for r in rs) / len(rs) for k in range(len(b))]
            ax.plot(b, y, marker="o", ms=3, label=m)
        if key == "true_value":
            rs = [r for r in runs if r["method"] == methods[0]]
            b = rs[0]["evaluation"]["budgets"]
            y = [sum(r["evaluation"]["oracle_value"][k] for r in rs) / len(rs) for k in range(len(b))]
            ax.plot(b, y, "k--", lw=1, label="oracle")
        ax.set_xlabel("budget per capita")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def _seed_data(data, seed: int):
    """The data of experiment seed ``seed`` from ``run_experiment(data=...)``."""
    if callable(data) and not isinstance(data, (RunData, dict)):
        return as_run_data(data(seed))
    if isinstance(data, dict) and data and all(isinstance(k, int) for k in data):
        if seed not in data:
            raise ConfigError(f"bidfcl.experiment: data has no entry for seed {seed} (has seeds {sorted(data)})")
        return as_run_data(data[seed])
    return as_run_data(data)


def run_experiment(
    cfg, out_dir: Optional[str] = None, *, progress: Optional[Progress] = None, log=print, data=None
) -> dict:
    """Train and score every method on every seed; write results into ``out_dir`` (if given).

    ``cfg``: a :class:`RunConfig` or a dict of config sections. ``data``: None (``cfg.data``, with a
    fresh synthetic sample per seed), or data the caller holds: one :class:`RunData` (or split dict,
    see :func:`bidfcl.train.run_data`) for every seed, a dict ``{seed: data}``, or a function
    ``seed -> data``. Seeds also set the model initialisation and batch order (``train.seed + seed``).
    """
    from . import make_trainer  # noqa: PLC0415 (bidfcl.train's __init__ imports this module)

    if isinstance(cfg, dict):
        cfg = config_from_dict(cfg)
    x = cfg.experiment
    methods, seeds = list(x.methods), list(x.seeds)
    if x.reference not in methods:
        raise ConfigError(
            f"bidfcl config: experiment.reference {x.reference!r} must be one of experiment.methods {methods}"
        )
    for m in methods:  # check every method config before spending time
        method_config(cfg, m, seeds[0])
    for note in preset_notes(cfg):
        log(note)
    progress = progress if progress is not None else Progress("none")
    data_arg = data
    if data_arg is not None:
        _seed_data(data_arg, seeds[0])  # bad data fails before the first run
    runs: list[dict] = []
    t_all = time.perf_counter()
    for s in seeds:
        data = load_run_data(cfg.data, seed_offset=s) if data_arg is None else _seed_data(data_arg, s)
        teachers: dict = {}
        for m in methods:
            mcfg = method_config(cfg, m, s)
            kw = {}
            t = mcfg.train
            if t.method == "bidfcl":
                teacher = teachers.get(_teacher_key(mcfg, s, mcfg.bidfcl.teacher_epochs))
                if teacher is not None:
                    kw["teacher"] = teacher
            elif t.method == "dfcl":  # DFCL fine-tunes the TSM-on-RCT model when it trained as long
                warm = teachers.get(_teacher_key(mcfg, s, t.warm_start_epochs))
                if warm is not None:
                    kw["warm_start"] = warm
            t0 = time.perf_counter()
            trainer = make_trainer(mcfg, data, progress=progress, **kw)
            result = trainer.fit()
            if t.method == "tsm" and mcfg.tsm.data == "rct":
                teachers[_teacher_key(mcfg, s, t.epochs)] = trainer.deployed
            main = [v for k, v in result["epoch_seconds"].items() if not k.endswith("warm") and k != "teacher"]
            rec = {
                "seed": s,
                "method": m,
                "evaluation": result["evaluation"],
                "fit_seconds": time.perf_counter() - t0,
                "main_epoch_seconds": main[-1] if main else float("nan"),
                "epoch_seconds": result["epoch_seconds"],
                "best": result["best"],
            }
            runs.append(rec)
            if out_dir is not None:  # keep what is done if the experiment is stopped
                os.makedirs(out_dir, exist_ok=True)
                _atomic_text(
                    json.dumps({"config": cfg.to_dict(), "runs": runs}, default=str),
                    os.path.join(out_dir, "partial.json"),
                )
            ev = rec["evaluation"]
            extra = (
                f" true={ev['true_value_mean']:.4f} gain={ev['gain_share_mean']:.3f}" if "true_value_mean" in ev else ""
            )
            if ev.get("n_infeasible"):
                extra += f" INFEASIBLE at {ev['n_infeasible']} of {len(ev['budgets'])} budgets"
            log(f"seed {s} {m:<20} eom={ev['eom_mean']:.4f}{extra} ({rec['fit_seconds']:.1f} s)")
    rows = summarize(runs, methods, x.reference)
    table = markdown_table(rows, x.reference)
    pairs = pairwise_table(runs, methods)
    if pairs:
        table += "\n" + pairs
    out = {
        "rows": rows,
        "runs": runs,
        "table": table,
        "seconds": time.perf_counter() - t_all,
        "config": cfg.to_dict(),
        "plot": None,
    }
    if out_dir is not None:
        _write(out, runs, rows, methods, out_dir, log)
    return out


def _write(out: dict, runs: list[dict], rows: list[dict], methods: list[str], out_dir: str, log) -> None:
    os.makedirs(out_dir, exist_ok=True)
    _atomic_text(out["table"], os.path.join(out_dir, "results.md"))
    _atomic_text(_csv(rows), os.path.join(out_dir, "results.csv"))
    _atomic_text(_curves_csv(runs), os.path.join(out_dir, "curves.csv"))
    _atomic_text(
        json.dumps({k: v for k, v in out.items() if k != "table"}, indent=1, default=str),
        os.path.join(out_dir, "results.json"),
    )
    msg = plot_curves(runs, methods, os.path.join(out_dir, "eom_vs_budget.png"))
    out["plot"] = msg or os.path.join(out_dir, "eom_vs_budget.png")
    if msg:
        log(msg)


def combine_results(dirs: list[str], out_dir: Optional[str] = None, *, log=print) -> dict:
    """Merge the runs of several ``bidfcl experiment`` outputs (e.g. seeds run in separate processes;
    a folder of a stopped experiment contributes the runs it finished) into one table. Methods and reference come from the first folder; a (seed, method) pair seen
    twice is an error."""
    runs, seen, first = [], set(), None
    for d in dirs:
        path = os.path.join(d, "results.json")
        if not os.path.exists(path):  # an experiment stopped early: the runs it finished
            path = os.path.join(d, "partial.json")
        if not os.path.exists(path):
            raise ConfigError(
                f"bidfcl: {d} holds neither results.json nor partial.json (not an experiment output folder)"
            )
        with open(path) as fh:
            blob = json.load(fh)
        first = first or blob["config"]["experiment"]
        for r in blob["runs"]:
            key = (r["seed"], r["method"])
            if key in seen:
                raise ConfigError(f"bidfcl: seed {key[0]} of {key[1]!r} appears in more than one folder")
            seen.add(key)
            runs.append(r)
    methods = [m for m in first["methods"] if any(r["method"] == m for r in runs)]
    rows = summarize(runs, methods, first["reference"])
    table = markdown_table(rows, first["reference"])
    pairs = pairwise_table(runs, methods)
    if pairs:
        table += "\n" + pairs
    out = {
        "rows": rows,
        "runs": runs,
        "table": table,
        "config": {"combined": dirs},
        "seconds": sum(r["fit_seconds"] for r in runs),
        "plot": None,
    }
    if out_dir is not None:
        _write(out, runs, rows, methods, out_dir, log)
    return out
