"""The `bidfcl` command: train / evaluate / allocate / experiment on tiny configs, errors, demo."""

import json

import pytest
import torch

from bidfcl.cli import main
from conftest import tiny_tsm_config

TINY = tiny_tsm_config()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def cfg_path(tmp_path):
    p = tmp_path / "cfg.toml"
    p.write_text(TINY + f'dir = "{tmp_path / "run"}"\n')
    return p


def test_train_evaluate_allocate(tmp_path, cfg_path, capsys):
    assert main(["train", "--config", str(cfg_path), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "mean EOM" in out and "gain share" in out
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "tsm" and len(metrics["evaluation"]["eom"]) == 10

    ev_json = tmp_path / "ev.json"
    assert (
        main(
            ["evaluate", "--model", str(run / "model.pt"), "--split", "val", "--budgets", "4", "--output", str(ev_json)]
        )
        == 0
    )
    assert len(json.loads(ev_json.read_text())["eom"]) == 4

    pa = pytest.importorskip("pyarrow")
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    import bidfcl

    d = bidfcl.data.make_marketing(n_rct=50, n_obs=0, n_val=0, n_test=0, seed=3)
    cols = {f"x{j}": d.rct.x[:, j].numpy() for j in range(d.n_features)}
    cols["user"] = [f"u{i}" for i in range(50)]
    pq.write_table(pa.table(cols), str(tmp_path / "users.parquet"))
    out_csv = tmp_path / "alloc.csv"
    assert (
        main(
            [
                "allocate",
                "--model",
                str(run / "model.pt"),
                "--input",
                str(tmp_path / "users.parquet"),
                "--budget",
                "0.3",
                "--id-column",
                "user",
                "--output",
                str(out_csv),
            ]
        )
        == 0
    )
    t = pacsv.read_csv(str(out_csv))
    assert t.column_names == ["user", "option", "expected_revenue", "expected_spend"] and t.num_rows == 50
    spend = sum(t.column("expected_spend").to_pylist())
    assert spend <= 0.3 * 50 * (1 + 1e-9)
    assert (
        main(
            [
                "allocate",
                "--model",
                str(run / "model.pt"),
                "--input",
                str(tmp_path / "users.parquet"),
                "--total-budget",
                "5",
                "--output",
                str(tmp_path / "alloc.parquet"),
            ]
        )
        == 0
    )
    t2 = pq.read_table(str(tmp_path / "alloc.parquet"))
    assert t2.column_names[0] == "row" and sum(t2.column("expected_spend").to_pylist()) <= 5 * (1 + 1e-9)
    # a missing feature column is reported
    pq.write_table(pa.table({"x0": [1.0]}), str(tmp_path / "few.parquet"))
    with pytest.raises(SystemExit, match="lacks feature column"):
        main(
            [
                "allocate",
                "--model",
                str(run / "model.pt"),
                "--input",
                str(tmp_path / "few.parquet"),
                "--budget",
                "1",
                "--output",
                str(tmp_path / "x.csv"),
            ]
        )


def test_train_resume_continues(tmp_path, cfg_path, capsys):
    assert main(["train", "--config", str(cfg_path), "--set", "train.epochs=1"]) == 0
    # the same config with more epochs is another config: refused with a clear message
    assert main(["train", "--config", str(cfg_path), "--resume"]) == 2
    assert "different configuration" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--config",
                str(cfg_path),
                "--set",
                "train.epochs=1",
                "--set",
                'output.progress="lines"',
                "--resume",
            ]
        )
        == 0
    )
    assert "resuming tsm" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text,match",
    [
        ("[train]\nepochs = -1\n", "expected train.epochs >= 0"),
        ("[train]\nmethd = 'tsm'\n", "did you mean 'method'"),
        ("[train\n", "not valid TOML"),
    ],
)
def test_bad_config_exit_code_and_message(tmp_path, capsys, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    assert main(["train", "--config", str(p)]) == 2
    assert match in capsys.readouterr().err


def test_missing_model_file(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "nope.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_experiment_command(tmp_path, cfg_path, capsys):
    assert (
        main(
            [
                "experiment",
                "--config",
                str(cfg_path),
                "--methods",
                "tsm-rct,tsm-obs",
                "--seeds",
                "0,1",
                "--out",
                str(tmp_path / "exp"),
                "--set",
                "train.epochs=1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| tsm-obs |" in out and (tmp_path / "exp" / "results.csv").exists()
    # seeds run in another process merge into one table
    assert (
        main(
            [
                "experiment",
                "--config",
                str(cfg_path),
                "--methods",
                "tsm-rct,tsm-obs",
                "--seeds",
                "2",
                "--out",
                str(tmp_path / "exp2"),
                "--set",
                "train.epochs=1",
            ]
        )
        == 0
    )
    assert (
        main(["experiment", "--combine", f"{tmp_path / 'exp'},{tmp_path / 'exp2'}", "--out", str(tmp_path / "all")])
        == 0
    )
    assert "| tsm-obs | 3 |" in capsys.readouterr().out
    assert (
        main(["experiment", "--combine", f"{tmp_path / 'exp'},{tmp_path / 'exp'}", "--out", str(tmp_path / "dup")]) == 2
    )
    assert "more than one folder" in capsys.readouterr().err


def test_solver_demo_still_runs(capsys):
    assert main(["solve-demo", "--users", "2000", "--options", "3", "--threads", "1"]) == 0
    assert "lam*" in capsys.readouterr().out


def test_learning_demo_quick(tmp_path, capsys):
    assert main(["demo", "--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for m in ("tsm-rct", "tsm-obs", "tsm-pooled", "dfcl-ppl", "bidfcl-ppl-fixed", "bidfcl-ppl", "oracle"):
        assert f"| {m}" in out
    assert (tmp_path / "results.md").exists()


# ------------------------------------------------------------------------------------- scenarios


def test_data_scenario_in_a_config_is_the_base_and_keys_override():
    from bidfcl.data import SCENARIOS, make_scenario
    from bidfcl.train import config_from_dict, load_run_data
    from bidfcl.train.datasets import synthetic_kwargs

    sizes = {"n_rct": 300, "n_obs": 500, "n_val": 200, "n_test": 400}
    cfg = config_from_dict({"data": {"scenario": "many-options", "confounding": 0.5, **sizes}})
    kw = synthetic_kwargs(cfg.data)
    assert kw == {**SCENARIOS["many-options"].kwargs, "confounding": 0.5, **sizes}
    data = load_run_data(cfg.data, seed_offset=2)
    md = data.marketing
    assert data.n_options == 8 and md.config["confounding"] == 0.5 and md.config["base_scale"] == 0.1
    assert len(data.rct) == 300 and md.config["seed"] == 2
    ref = make_scenario("many-options", seed=2, confounding=0.5, **sizes)
    assert torch.equal(ref.obs.revenue, md.obs.revenue)
    # revenue_tail is a [data] key too
    cfg = config_from_dict({"data": {"scenario": "heavy-tail", "revenue_tail": 0.1, **sizes}})
    assert load_run_data(cfg.data).marketing.config["revenue_tail"] == 0.1


@pytest.mark.parametrize(
    "raw,match",
    [
        (
            {"data": {"scenario": "heavy-tails"}},
            r"data.scenario: unknown scenario 'heavy-tails' \(did you mean "
            r"'heavy-tail'\?\); known scenarios: default, biased-small-rct",
        ),
        ({"data": {"scenario": 3}}, r"expected data.scenario to be a string, got 3"),
        (
            {"data": {"scenario": "binary", "source": "files", "rct": __file__, "features": ["a"]}},
            r"data.scenario = 'binary' needs data.source = 'synthetic'",
        ),
        ({"data": {"revenue_tail": "big"}}, r"expected data.revenue_tail to be a number"),
    ],
)
def test_bad_scenario_configs(raw, match):
    from bidfcl.train import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


def test_scenario_with_bad_override_becomes_config_error():
    from bidfcl.train import ConfigError, config_from_dict, load_run_data

    cfg = config_from_dict(
        {"data": {"scenario": "binary", "revenue_tail": 0.2, "n_rct": 10, "n_obs": 10, "n_val": 10, "n_test": 10}}
    )
    with pytest.raises(ConfigError, match="revenue_tail applies to outcome='continuous'"):
        load_run_data(cfg.data)


def test_scenario_flag_on_train_and_experiment(tmp_path, cfg_path, capsys):
    assert (
        main(
            [
                "train",
                "--config",
                str(cfg_path),
                "--threads",
                "1",
                "--scenario",
                "many-options",
                "--out",
                str(tmp_path / "run8"),
            ]
        )
        == 0
    )
    from bidfcl.train import load_model

    model, meta = load_model(str(tmp_path / "run8" / "model.pt"))
    assert meta["run_config"]["data"]["scenario"] == "many-options" and model.n_options == 8
    capsys.readouterr()
    assert (
        main(
            [
                "experiment",
                "--config",
                str(cfg_path),
                "--methods",
                "tsm-rct",
                "--seeds",
                "0",
                "--scenario",
                "binary",
                "--out",
                str(tmp_path / "exp"),
                "--set",
                "train.epochs=1",
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert res["config"]["data"]["scenario"] == "binary"


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--quick", "--scenario", "heavy-tails"],
        ["train", "--config", "CFG", "--scenario", "heavy-tails"],
        ["experiment", "--config", "CFG", "--scenario", "heavy-tails"],
    ],
)
def test_bad_scenario_on_the_command_line(argv, cfg_path, capsys):
    argv = [str(cfg_path) if a == "CFG" else a for a in argv]
    assert main(argv + ["--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown scenario 'heavy-tails' (did you mean 'heavy-tail'?)" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_scenarios_command_lists_every_scenario(capsys):
    from bidfcl.data import SCENARIOS

    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    for name, sc in SCENARIOS.items():
        assert f"\n{name}: RCT " in out
        assert f"oracle/TSM-RCT {sc.oracle_vs_tsm_rct:.3f}" in out


def test_learning_demo_quick_binary_scenario(capsys):
    assert main(["demo", "--quick", "--scenario", "binary", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "scenario 'binary'" in out and "binary revenue" in out and "1,000 RCT" in out
    for m in ("tsm-rct", "bidfcl-ppl", "oracle"):
        assert f"| {m}" in out


def test_learning_demo_defaults_to_a_separating_scenario():
    from bidfcl.cli import DEMO_SCENARIO, build_parser

    assert build_parser().parse_args(["demo"]).scenario == DEMO_SCENARIO == "biased-small-rct"
