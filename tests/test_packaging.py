"""Packaging: the TOML parser on Python 3.10 (tomli), optional dependencies (pyarrow, matplotlib)
failing with one line that names the extra, and the PNG of the experiment plot.

``BIDFCL_TEST_ALL_EXTRAS=1`` (set by CI) turns the skips for a missing optional package into
failures, so a CI that forgot to install an extra cannot pass by skipping its tests.
"""

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import types

import pytest

from bidfcl.cli import _parse_sets, main
from bidfcl.train import config as config_module
from bidfcl.train.config import ConfigError, load_config
from conftest import needs_ext


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

    spy = types.SimpleNamespace(
        load=counted(tomli.load), loads=counted(tomli.loads), TOMLDecodeError=tomli.TOMLDecodeError
    )
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
    sets = _parse_sets(
        [
            "train.epochs=2",
            "train.lr=1e-3",
            "model.hidden=[8, 4]",
            "train.method=tsm",
            'output.dir="runs/x"',
            "train.learn_bridge=false",
        ]
    )
    assert sets == {
        "train.epochs": 2,
        "train.lr": 1e-3,
        "model.hidden": [8, 4],
        "train.method": "tsm",
        "output.dir": "runs/x",
        "train.learn_bridge": False,
    }
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
    path.write_text(
        '[data]\nsource = "files"\nrct = "rct.csv"\nfeatures = ["a"]\ntreatment = "t"\n'
        'revenue = "rev"\ncost = "cst"\n[train]\nepochs = 1\n[model]\nhidden = [4]\n'
        f'[output]\nprogress = "none"\ndir = "{tmp_path / "run"}"\n'
    )
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
    cfg.write_text(
        "[data]\nn_rct = 300\nn_obs = 300\nn_val = 300\nn_test = 300\n[model]\nhidden = [4]\n"
        f'[train]\nmethod = "tsm"\nepochs = 1\n[output]\nprogress = "none"\ndir = "{tmp_path / "run"}"\n'
    )
    assert main(["train", "--config", str(cfg), "--threads", "1"]) == 0
    capsys.readouterr()
    (tmp_path / "users.csv").write_text("x0\n0.5\n")
    hide_modules(monkeypatch, "pyarrow")
    assert (
        main(
            [
                "allocate",
                "--model",
                str(tmp_path / "run" / "model.pt"),
                "--input",
                str(tmp_path / "users.csv"),
                "--output",
                str(tmp_path / "plan.csv"),
                "--budget",
                "0.3",
            ]
        )
        == 2
    )
    assert "pip install 'bidfcl[data]'" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "plan.csv").exists()


# ------------------------------------------------------------------------------------ matplotlib
def _runs():
    budgets = [0.1, 0.2, 0.3]
    ev = {
        "budgets": budgets,
        "eom": [1.0, 1.5, 1.8],
        "eom_se": [0.1] * 3,
        "true_value": [1.1, 1.4, 1.7],
        "oracle_value": [1.3, 1.7, 2.0],
    }
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
    cfg.write_text(
        "[data]\nn_rct = 300\nn_obs = 300\nn_val = 300\nn_test = 300\n[model]\nhidden = [4]\n"
        '[train]\nepochs = 1\n[output]\nprogress = "none"\n'
    )
    assert (
        main(
            [
                "experiment",
                "--config",
                str(cfg),
                "--methods",
                "tsm-rct",
                "--seeds",
                "0",
                "--out",
                str(tmp_path / "exp"),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    png = tmp_path / "exp" / "eom_vs_budget.png"
    assert str(png) in capsys.readouterr().out
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000


def test_plot_without_matplotlib_is_one_line_naming_the_plot_extra(monkeypatch, tmp_path):
    from bidfcl.train.experiment import plot_curves

    hide_modules(monkeypatch, "matplotlib")
    msg = plot_curves(_runs(), ["tsm-rct", "bidfcl-ppl"], str(tmp_path / "p.png"))
    assert "matplotlib" in msg and "pip install 'bidfcl[plot]'" in msg and "\n" not in msg
    assert not (tmp_path / "p.png").exists()


# ----------------------------------------------------------- the torch the extension was built for
import bidfcl  # noqa: E402
from bidfcl import _ops  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_torch_mismatch_message_names_both_torches_and_the_ways_out():
    msg = _ops.torch_mismatch("2.13.0+cpu", False, "2.14.1", "13.0")
    assert "built against torch 2.13.0+cpu" in msg and "torch 2.14.1 is installed" in msg
    assert "pip install 'torch==2.13.*'" in msg and "--no-build-isolation" in msg and "BIDFCL_NO_EXTENSION=1" in msg
    assert "\n" not in msg
    assert "built against torch 2.13.0" in _ops.torch_mismatch("2.13.0", False, "3.13.0", None)
    # the same minor release (another patch or local build label) loads
    assert _ops.torch_mismatch("2.13.0+cpu", False, "2.13.1", None) is None
    assert _ops.torch_mismatch("2.13.0+cpu", False, "2.13.0+cu130", "13.0") is None
    # CUDA kernels need a CUDA build of torch
    cuda = _ops.torch_mismatch("2.14.1+cu130", True, "2.14.1+cpu", None)
    assert "CUDA kernels" in cuda and "CPU-only" in cuda and "torch 2.14.*" in cuda
    assert _ops.torch_mismatch("2.14.1+cu130", True, "2.14.1+cu130", "13.0") is None


@needs_ext
def test_build_record_agrees_with_the_extension_and_the_running_torch():
    import torch

    from bidfcl import _build_record

    info = bidfcl.build_info()
    assert (_build_record.TORCH_VERSION, _build_record.WITH_CUDA, _build_record.VERSION) == (
        info["torch_version"],
        info["cuda"],
        info["version"],
    )
    assert (
        _ops.torch_mismatch(_build_record.TORCH_VERSION, _build_record.WITH_CUDA, torch.__version__, torch.version.cuda)
        is None
    )


def _import_bidfcl_under_torch(version: str, **env):
    """``import bidfcl`` in a fresh interpreter whose torch reports ``version``."""
    code = (
        "import torch, torch.torch_version as tv\n"
        f"torch.__version__ = tv.TorchVersion({version!r})\n"
        "import bidfcl\nprint('extension', bidfcl.EXTENSION_LOADED)\n"
    )
    full_env = {k: v for k, v in os.environ.items() if k != "BIDFCL_NO_EXTENSION"}
    full_env["PYTHONPATH"] = os.path.dirname(os.path.dirname(bidfcl.__file__))  # this very package
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=300)


@needs_ext
def test_importing_under_another_torch_is_one_clear_message():
    from bidfcl import _build_record

    proc = _import_bidfcl_under_torch("9.1.0")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "bidfcl._ops.ExtensionMismatchError: bidfcl: its compiled extension was built against "
        f"torch {_build_record.TORCH_VERSION}, but torch 9.1.0 is installed"
    )
    assert "undefined symbol" not in proc.stderr and "During handling" not in proc.stderr
    # the pure-PyTorch twins load under any torch
    proc = _import_bidfcl_under_torch("9.1.0", BIDFCL_NO_EXTENSION="1")
    assert proc.returncode == 0 and "extension False" in proc.stdout, proc.stderr


# ------------------------------------------------------------------------- the wheel's metadata
def _metadata_provider():
    path = os.path.join(ROOT, "tools", "bidfcl_metadata.py")
    if not os.path.exists(path):
        pytest.skip("tools/bidfcl_metadata.py is not beside these tests")
    spec = importlib.util.spec_from_file_location("bidfcl_metadata", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_metadata_provider_pins_the_installed_torch_minor_release(monkeypatch):
    provider = _metadata_provider()
    assert provider.torch_requirement("2.13.0+cpu") == "torch==2.13.*"
    assert provider.torch_requirement("2.14.0.dev20250101") == "torch==2.14.*"
    monkeypatch.setattr(provider.importlib.metadata, "version", lambda name: "2.13.0+cpu")
    assert provider.dynamic_metadata("dependencies", {"requires": ["numpy>=1.24"]}) == ["torch==2.13.*", "numpy>=1.24"]
    with pytest.raises(ValueError, match="provides 'dependencies', not 'version'"):
        provider.dynamic_metadata("version", {})
    with pytest.raises(TypeError, match="list of requirement strings"):
        provider.dynamic_metadata("dependencies", {"requires": "numpy"})

    def no_torch(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(provider.importlib.metadata, "version", no_torch)
    with pytest.raises(RuntimeError, match="torch is not installed.*--no-build-isolation"):
        provider.dynamic_metadata("dependencies", {"requires": []})


def test_installed_package_pins_the_torch_it_was_built_against():
    """Runs where bidfcl is installed (CI's wheel check sets BIDFCL_TEST_INSTALLED=1, which also
    asserts that the package imported is the installed one, not the source tree's python/)."""
    must = os.environ.get("BIDFCL_TEST_INSTALLED", "") not in ("", "0")
    source_copy = os.path.abspath(bidfcl.__file__).startswith(os.path.join(ROOT, "python") + os.sep)
    if must:
        assert not source_copy, f"bidfcl was imported from the source tree ({bidfcl.__file__})"
        assert bidfcl.EXTENSION_LOADED
    try:
        dist = importlib.metadata.distribution("bidfcl")
    except importlib.metadata.PackageNotFoundError:
        if must:
            raise
        pytest.skip("bidfcl is not installed as a distribution (a source-tree run)")
    if source_copy and not must:
        pytest.skip("bidfcl is imported from the source tree, not from the installed distribution")
    from bidfcl import _build_record

    major, minor = _build_record.TORCH_VERSION.split(".")[:2]
    pins = [r for r in dist.requires or [] if re.match(r"torch\b", r)]
    assert pins == [f"torch=={major}.{minor}.*"]
