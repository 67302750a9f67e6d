"""Packaging: the TOML parser on Python 3.10 (tomli), optional dependencies (pyarrow, matplotlib)
failing with one line that names the extra, and the PNG of the experiment plot.

``BIDFCL_TEST_ALL_EXTRAS=1`` (set by CI) turns the skips for a missing optional package into
failures, so a CI that forgot to install an extra cannot pass by skipping its tests.
"""

import os
import sys
import types

import pytest

from bidfcl.cli import _parse_sets, main
from bidfcl.train import config as config_module
from bidfcl.train.config import ConfigError, load_config


def needs(module: str):
    """The module, or a skip (a failure under BIDFCL_TEST_ALL_EXTRAS=1)."""
    if os.environ.get("BIDFCL_TEST_ALL_EXTRAS", "") not in ("", "0"):
        __import__(module)
        return sys.modules[module]
    return pytest.importorskip(module)


def hide_modules(monkeypatch, *names):
    """Make ``import NAME`` (and of every NAME.sub already loaded) fail as if NAME were not installed."""
    for name in names:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.setitem(sys.modules, loaded, None)
        monkeypatch.setitem(sys.modules, name, None)


def one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got {lines}"
    assert "Traceback" not in text
    return lines[0]


# ------------------------------------------------------------------------- TOML on Python 3.10
def test_config_and_set_values_are_parsed_by_tomli_where_tomllib_is_missing(monkeypatch, tmp_path):
    tomli = needs("tomli")
    hide_modules(monkeypatch, "tomllib")  # what Python 3.10 looks like
    parser = config_module._toml_parser()
    assert parser is tomli
    calls = []

    def counted(fn):
        def wrapper(*args, **kwargs):
            calls.append(fn.__name__)
            return fn(*args, **kwargs)
        return wrapper

    spy = types.SimpleNamespace(load=counted(tomli.load), loads=counted(tomli.loads),
                                TOMLDecodeError=tomli.TOMLDecodeError)
    monkeypatch.setattr(config_module, "tomllib", spy)

    path = tmp_path / "c.toml"
    path.write_text('[train]\nmethod = "dfcl"\nepochs = 3\nlr = 0.5\n[model]\nhidden = [4, 2]\n')
    cfg = load_config(path)
    assert (cfg.train.method, cfg.train.epochs, cfg.train.lr, cfg.model.hidden) == ("dfcl", 3, 0.5, [4, 2])
    assert calls == ["load"]
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        load_config(tmp_path / "bad.toml")

    # --set values keep their TOML types (a bare word stays text)
    sets = _parse_sets(["train.epochs=2", "train.lr=1e-3", "model.hidden=[8, 4]", "train.method=tsm",
                        'output.dir="runs/x"', "train.learn_bridge=false"])
    assert sets == {"train.epochs": 2, "train.lr": 1e-3, "model.hidden": [8, 4], "train.method": "tsm",
                    "output.dir": "runs/x", "train.learn_bridge": False}
    assert type(sets["train.epochs"]) is int and type(sets["train.lr"]) is float
    assert calls.count("loads") == 6


def test_no_toml_parser_is_one_clear_error(monkeypatch, tmp_path, capsys):
    hide_modules(monkeypatch, "tomllib", "tomli")
    assert config_module._toml_parser() is None
    monkeypatch.setattr(config_module, "tomllib", None)
    path = tmp_path / "c.toml"
    path.write_text("[train]\nepochs = 1\n")
    with pytest.raises(ConfigError, match=r"tomli.*pip install 'tomli>=2'"):
        load_config(path)
    with pytest.raises(ConfigError, match="tomli"):  # not silently keeping "2" as text
        _parse_sets(["train.epochs=2"])
    assert main(["train", "--config", str(path)]) == 2
    assert "pip install 'tomli>=2'" in one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------------------- pyarrow
@pytest.fixture
def files_config(tmp_path):
    (tmp_path / "rct.csv").write_text("a,t,rev,cst\n0.5,0,1.0,0.0\n0.1,1,2.0,1.0\n")
    path = tmp_path / "files.toml"
    path.write_text('[data]\nsource = "files"\nrct = "rct.csv"\nfeatures = ["a"]\ntreatment = "t"\n'
                    'revenue = "rev"\ncost = "cst"\n[train]\nepochs = 1\n[model]\nhidden = [4]\n'
                    f'[output]\nprogress = "none"\ndir = "{tmp_path / "run"}"\n')
    return path


def test_load_table_without_pyarrow_names_the_data_extra(monkeypatch, tmp_path, files_config):
    from bidfcl._optional import MissingDependencyError
    from bidfcl.data import load_table

    hide_modules(monkeypatch, "pyarrow")
    with pytest.raises(MissingDependencyError, match=r"needs pyarrow.*pip install 'bidfcl\[data\]'") as info:
        load_table(tmp_path / "rct.csv", ["a"], "t", "rev", "cst")
    assert isinstance(info.value, ImportError) and "\n" not in str(info.value)


def test_train_on_files_without_pyarrow_is_one_line(monkeypatch, files_config, capsys):
    hide_modules(monkeypatch, "pyarrow")
    assert main(["train", "--config", str(files_config)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "pyarrow" in line and "pip install 'bidfcl[data]'" in line


def test_allocate_without_pyarrow_is_one_line(monkeypatch, tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[data]\nn_rct = 300\nn_obs = 300\nn_val = 300\nn_test = 300\n[model]\nhidden = [4]\n'
                   f'[train]\nmethod = "tsm"\nepochs = 1\n[output]\nprogress = "none"\ndir = "{tmp_path / "run"}"\n')
    assert main(["train", "--config", str(cfg), "--threads", "1"]) == 0
    capsys.readouterr()
    (tmp_path / "users.csv").write_text("x0\n0.5\n")
    hide_modules(monkeypatch, "pyarrow")
    assert main(["allocate", "--model", str(tmp_path / "run" / "model.pt"), "--input", str(tmp_path / "users.csv"),
                 "--output", str(tmp_path / "plan.csv"), "--budget", "0.3"]) == 2
    assert "pip install 'bidfcl[data]'" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "plan.csv").exists()


# ------------------------------------------------------------------------------------ matplotlib
def _runs():
    budgets = [0.1, 0.2, 0.3]
    ev = {"budgets": budgets, "eom": [1.0, 1.5, 1.8], "eom_se": [0.1] * 3, "true_value": [1.1, 1.4, 1.7],
          "oracle_value": [1.3, 1.7, 2.0]}
    return [{"seed": s, "method": m, "evaluation": ev} for s in (0, 1) for m in ("tsm-rct", "bidfcl-ppl")]


def test_experiment_plot_is_a_nonempty_png(tmp_path):
    needs("matplotlib")
    from bidfcl.train.experiment import plot_curves

    path = tmp_path / "eom_vs_budget.png"
    assert plot_curves(_runs(), ["tsm-rct", "bidfcl-ppl"], str(path)) is None
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_experiment_command_writes_the_png(tmp_path, capsys):
    needs("matplotlib")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[data]\nn_rct = 300\nn_obs = 300\nn_val = 300\nn_test = 300\n[model]\nhidden = [4]\n'
                   '[train]\nepochs = 1\n[output]\nprogress = "none"\n')
    assert main(["experiment", "--config", str(cfg), "--methods", "tsm-rct", "--seeds", "0",
                 "--out", str(tmp_path / "exp"), "--threads", "1"]) == 0
    png = tmp_path / "exp" / "eom_vs_budget.png"
    assert str(png) in capsys.readouterr().out
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000


def test_plot_without_matplotlib_is_one_line_naming_the_plot_extra(monkeypatch, tmp_path):
    from bidfcl.train.experiment import plot_curves

    hide_modules(monkeypatch, "matplotlib")
    msg = plot_curves(_runs(), ["tsm-rct", "bidfcl-ppl"], str(tmp_path / "p.png"))
    assert "matplotlib" in msg and "pip install 'bidfcl[plot]'" in msg and "\n" not in msg
    assert not (tmp_path / "p.png").exists()
