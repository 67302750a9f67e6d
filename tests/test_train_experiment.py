"""bidfcl.train.experiment: methods x seeds -> results tables."""

import importlib.util

import pytest
from _train_common import cfg_of

from bidfcl.train import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_experiment_table(tmp_path):
    from bidfcl.train.experiment import run_experiment

    methods = ["tsm-rct", "tsm-pooled", "dfcl-ppl", "bidfcl-ppl"]
    cfg = cfg_of(
        {"epochs": 2, "warm_start_epochs": 1},
        bidfcl={"teacher_epochs": 2, "cg_iters": 5},
        experiment={"methods": methods, "seeds": [0, 1], "overrides": {"tsm-pooled": {"train.epochs": 1}}},
    )
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


def test_experiment_table_names_models_that_cannot_allocate_a_budget():
    from bidfcl.train.experiment import markdown_table, summarize

    def run(method, seed, eom, infeasible):
        return {
            "seed": seed,
            "method": method,
            "main_epoch_seconds": 1.0,
            "fit_seconds": 1.0,
            "evaluation": {"eom_mean": eom, "n_infeasible": infeasible},
        }

    runs = [
        run("tsm-rct", 0, 1.0, 0),
        run("dfcl-ppl", 0, 1.1, 3),
        run("tsm-rct", 1, 1.0, 0),
        run("dfcl-ppl", 1, 1.0, 1),
    ]
    rows = summarize(runs, ["tsm-rct", "dfcl-ppl"], "tsm-rct")
    assert [r["infeasible"] for r in rows] == [0, 4]
    table = markdown_table(rows, "tsm-rct")
    assert "could not allocate" in table and "dfcl-ppl (4)" in table and "tsm-rct (" not in table
    assert "could not allocate" not in markdown_table(summarize(runs[:1], ["tsm-rct"], "tsm-rct"), "tsm-rct")
