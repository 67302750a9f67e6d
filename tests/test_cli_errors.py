"""Bad command lines, bad files and faults: one clear line on stderr and exit status 2, checked before
any long work; never a traceback or a silent wrong answer (issue 10)."""

import os
import random
import subprocess
import sys

import pytest
import torch

from bidfcl.cli import main
from conftest import tiny_tsm_config

TINY = tiny_tsm_config(n_rct=400, n_obs=800, n_val=400, n_test=400, hidden=(8,))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "cfg.toml"
    p.write_text(TINY)
    return p


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (model.pt, checkpoint.pt) shared by the tests that need one."""
    d = tmp_path_factory.mktemp("trained")
    p = d / "cfg.toml"
    p.write_text(TINY)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    assert main(["train", "--config", str(p), "--out", str(d / "run")]) == 0
    torch.set_num_threads(old)
    return d / "run", p


def fails(capsys, argv, *needles, code=2):
    """``main(argv)`` exits with ``code`` and one message holding every needle, no traceback."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


# ------------------------------------------------------------------- output locations, early
def test_train_out_is_a_file_fails_before_any_work(tmp_path, cfg, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    err = fails(
        capsys,
        ["train", "--config", str(cfg), "--out", str(f), "--progress", "lines"],
        "exists and is not a folder",
        str(f),
    )
    assert "generating" not in err  # nothing was started


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a read-only /proc")
def test_train_out_not_writable(cfg, capsys):
    fails(capsys, ["train", "--config", str(cfg), "--out", "/proc/bidfcl-out"], "cannot write into output.dir")


def test_experiment_and_allocate_check_outputs_first(tmp_path, cfg, trained, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    fails(capsys, ["experiment", "--config", str(cfg), "--out", str(f)], "exists and is not a folder")
    run, _ = trained
    users = tmp_path / "users.csv"
    users.write_text("x0\n1.0\n")
    fails(
        capsys,
        [
            "allocate",
            "--model",
            str(run / "model.pt"),
            "--input",
            str(users),
            "--budget",
            "1",
            "--output",
            str(tmp_path),
        ],
        "--output",
        "expected a .csv",
    )
    fails(
        capsys,
        [
            "allocate",
            "--model",
            str(run / "model.pt"),
            "--input",
            str(users),
            "--budget",
            "1",
            "--output",
            str(tmp_path / "plan.json"),
        ],
        "expected a .csv, .parquet or .pq",
        ".json",
    )
    fails(
        capsys,
        [
            "allocate",
            "--model",
            str(run / "model.pt"),
            "--input",
            str(tmp_path / "none.csv"),
            "--budget",
            "1",
            "--output",
            str(tmp_path / "p.csv"),
        ],
        "does not exist",
    )
    fails(capsys, ["evaluate", "--model", str(run / "model.pt"), "--output", str(tmp_path)], "is a folder")


# ------------------------------------------------------------------------ damaged checkpoints
def _damage(path, how):
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(random.Random(43).randbytes(4096))  # a seed whose bytes read as an absurd pickle length
    elif how == "wrong-structure":
        torch.save({"format": "bidfcl.checkpoint", "version": 1}, str(path))
    elif how == "not-a-dict":
        torch.save([1, 2, 3], str(path))
    elif how == "directory":
        path.unlink()
        path.mkdir()


@pytest.mark.parametrize("how", ["truncated", "empty", "random", "wrong-structure", "not-a-dict", "directory"])
def test_resume_from_a_damaged_checkpoint(tmp_path, cfg, trained, how, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    _damage(run / "checkpoint.pt", how)
    err = fails(
        capsys,
        ["train", "--config", str(cfg), "--out", str(run), "--resume", "--progress", "lines"],
        "checkpoint",
        str(run / "checkpoint.pt"),
    )
    assert "generating" not in err  # reported before the data are generated
    assert any(w in err for w in ("damaged", "empty", "incomplete", "folder", "not a bidfcl"))


@pytest.mark.parametrize("how", ["truncated", "random", "csv"])
def test_evaluate_a_damaged_or_foreign_model(tmp_path, trained, how, capsys):
    import shutil

    p = tmp_path / ("model.csv" if how == "csv" else "model.pt")
    if how == "csv":
        p.write_text("a,b\n1,2\n")
    else:
        shutil.copy(trained[0] / "model.pt", p)
        _damage(p, how)
    fails(capsys, ["evaluate", "--model", str(p)], "model file", str(p))


def test_random_bytes_are_always_a_damaged_file(tmp_path):
    """torch.load of random bytes fails in many ways (pickle opcodes with absurd lengths give
    OverflowError or MemoryError, ...): every one is the one-line 'damaged' error, never a crash."""
    from bidfcl.train.loop import _read_blob

    path = tmp_path / "random.pt"
    for seed in range(400):  # seeds 43, 86, 184 and 392 hit the OverflowError / MemoryError opcodes
        path.write_bytes(random.Random(seed).randbytes(4096))
        with pytest.raises(ValueError, match="is damaged or not a bidfcl file"):
            _read_blob(str(path), "model file", "hint")


def test_model_whose_weights_do_not_fit_its_config(tmp_path, trained, capsys):
    blob = torch.load(str(trained[0] / "model.pt"), weights_only=False)
    blob["model_config"]["hidden"] = [5]
    torch.save(blob, str(tmp_path / "bad.pt"))
    fails(capsys, ["evaluate", "--model", str(tmp_path / "bad.pt")], "is damaged", "do not fit")


# --------------------------------------------------------------------------- resume and data
def test_resume_refuses_changed_data(tmp_path, cfg, trained, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    # same config keys that matter for the comparison, different data: a files config would do
    # the same; here the checkpoint's fingerprint is edited to stand for "the file changed"
    blob = torch.load(str(run / "checkpoint.pt"), weights_only=False)
    fp = blob["extra"]["data_fingerprint"]
    assert set(fp) == {"rct", "obs", "val", "test"} and fp["rct"]["rows"] == 400
    fp["obs"]["sha256"] = "0" * 64
    torch.save(blob, str(run / "checkpoint.pt"))
    fails(capsys, ["train", "--config", str(cfg), "--out", str(run), "--resume"], "other data", "split obs")


def test_fingerprint_sees_a_changed_value():
    from bidfcl.data import make_marketing
    from bidfcl.train.loop import data_fingerprint

    d = make_marketing(n_rct=300, n_obs=0, n_val=0, n_test=0, seed=1).rct
    a = data_fingerprint(d)
    d.revenue[0] += 1.0  # row 0 is always in the sample
    assert data_fingerprint(d)["sha256"] != a["sha256"]
    assert data_fingerprint(None) is None


def test_stale_temporary_files_are_removed(tmp_path, cfg):
    from bidfcl.train.loop import remove_stale_temporaries

    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = run / f".checkpoint.pt.{dead.pid}.tmp"
    stale.write_bytes(b"half")
    live = run / f".checkpoint.pt.{os.getppid()}.tmp"  # a running process: kept
    live.write_bytes(b"other writer")
    assert main(["train", "--config", str(cfg), "--out", str(run)]) == 0
    assert not stale.exists() and live.exists()
    assert not [p for p in os.listdir(run) if p.endswith(".tmp") and p != live.name]
    assert remove_stale_temporaries(str(run)) == []


# ---------------------------------------------------------------------------- divergence
@pytest.mark.parametrize("method", ["tsm", "dfcl"])
def test_divergence_is_reported_with_epoch_and_batch(tmp_path, cfg, method, capsys):
    fails(
        capsys,
        [
            "train",
            "--config",
            str(cfg),
            "--out",
            str(tmp_path / "run"),
            "--set",
            f"train.method={method!r}".replace("'", '"'),
            "--set",
            "train.lr=1e10",
            "--set",
            "train.epochs=3",
        ],
        "training diverged",
        "at epoch",
        "batch",
        "train.lr",
    )


# ------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    "argv,needle",
    [
        (["evaluate", "--model", "m.pt", "--budgets", "-3"], "--budgets"),
        (["allocate", "--model", "m.pt", "--input", "i.csv", "--output", "o.csv", "--budget", "nan"], "finite"),
        (["allocate", "--model", "m.pt", "--input", "i.csv", "--output", "o.csv", "--budget", "inf"], "finite"),
        (["allocate", "--model", "m.pt", "--input", "i.csv", "--output", "o.csv", "--budget", "-1"], ">= 0"),
        (["train", "--config", "c.toml", "--threads", "-1"], "--threads"),
        (["demo", "--threads", "x"], "--threads"),
        (["demo", "--seeds", "a,b"], "'a' is not an integer"),
        (["experiment", "--config", "c.toml", "--seeds", "1,1"], "distinct"),
        (["solve-demo", "--options", "0"], "--options"),
        (["solve-demo", "--budget-fraction", "1.5"], "in [0, 1]"),
        (["solve-demo", "--budget-fraction", "nan"], "finite"),
    ],
)
def test_bad_flag_values_are_usage_errors(argv, needle, capsys):
    fails(capsys, argv, needle)


def test_config_that_is_a_folder_or_binary(tmp_path, capsys):
    fails(capsys, ["train", "--config", str(tmp_path)], "is a folder, expected a TOML file")
    b = tmp_path / "bin.toml"
    b.write_bytes(b"\xff\xfe\x00garbage")
    fails(capsys, ["train", "--config", str(b)], str(b))


@pytest.mark.parametrize(
    "argv", [["--budget-fraction", "0"], ["--options", "1"], ["--users", "1", "--options", "1"], ["--users", "1"]]
)
def test_solve_demo_edge_sizes_run(argv, capsys):
    assert main(["solve-demo", "--users", "2000", *argv] if "--users" not in argv else ["solve-demo", *argv]) == 0
    assert "lam*" in capsys.readouterr().out


def test_allocate_bad_inputs(tmp_path, trained, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    run, _ = trained
    model = str(run / "model.pt")
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({f"x{j}": pa.array([], pa.float64()) for j in range(8)}), str(empty))
    fails(
        capsys,
        ["allocate", "--model", model, "--input", str(empty), "--budget", "1", "--output", str(tmp_path / "p.csv")],
        "has no rows",
    )
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1" + os.urandom(200))
    fails(
        capsys,
        ["allocate", "--model", model, "--input", str(bad), "--budget", "1", "--output", str(tmp_path / "p.csv")],
        "cannot read --input",
        "Parquet",
    )
    fails(
        capsys,
        ["allocate", "--model", model, "--input", str(bad), "--output", str(tmp_path / "p.csv")],
        "exactly one of --budget",
    )


# ------------------------------------------------------------------------ silent behaviour
def test_train_says_it_ignores_the_experiment_section(tmp_path, cfg, capsys):
    p = tmp_path / "exp.toml"
    p.write_text(TINY + '[experiment]\nmethods = ["tsm-rct", "tsm-pooled"]\nseeds = [0]\nreference = "tsm-rct"\n')
    assert main(["train", "--config", str(p), "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert "[experiment] section is used by `bidfcl experiment` only" in captured.err
    assert "model selection" in captured.out and "epoch" in captured.out


def test_experiment_says_which_config_values_presets_replace(cfg):
    from bidfcl.train import load_config
    from bidfcl.train.experiment import preset_notes

    c = load_config(cfg, {"experiment.methods": ["tsm-rct", "tsm-pooled"], "experiment.reference": "tsm-rct"})
    notes = preset_notes(c)  # the config says tsm.data = "pooled"
    assert len(notes) == 1 and "'tsm-rct' sets tsm.data = 'rct'" in notes[0] and "'pooled'" in notes[0]
    c2 = load_config(cfg, {"experiment.methods": ["tsm-pooled"], "experiment.reference": "tsm-pooled"})
    assert preset_notes(c2) == []


def test_unexpected_errors_are_one_line(monkeypatch, capsys):
    import bidfcl.cli as cli

    def boom(args):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(cli, "_scenarios", boom)
    fails(capsys, ["scenarios"], "internal error (RuntimeError: something inside broke)", "BIDFCL_DEBUG=1", code=1)


def test_broken_pipe_is_quiet():
    """``bidfcl scenarios | head -1``: the reader has gone before the output is written."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r, w = os.pipe()
    os.close(r)
    proc = subprocess.Popen([sys.executable, "-m", "bidfcl", "scenarios"], stdout=w, stderr=subprocess.PIPE, env=env)
    os.close(w)
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def _files_example(tmp_path, *extra, **sizes) -> str:
    """examples/dfcl_files.toml copied into tmp_path, and its tables written there by
    ``bidfcl write-data`` at ``sizes`` (``extra``: more write-data arguments); the config's path."""
    import shutil

    root = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
    shutil.copy(os.path.join(root, "dfcl_files.toml"), tmp_path / "dfcl_files.toml")
    sets = [a for key, n in sizes.items() for a in ("--set", f"data.{key}={n}")]
    assert main(["write-data", "--out", str(tmp_path / "data"), *extra, *sets]) == 0
    return str(tmp_path / "dfcl_files.toml")


def test_files_example_runs_on_written_tables(tmp_path, capsys):
    """examples/dfcl_files.toml as its comment says: `write-data` then `train` (tiny sizes here)."""
    pytest.importorskip("pyarrow")
    cfg = _files_example(tmp_path, "--scenario", "biased-small-rct", n_rct=600, n_obs=0, n_val=400, n_test=400)
    run = ["--out", str(tmp_path / "run"), "--set", "train.epochs=1", "--set", "train.warm_start_epochs=1"]
    assert main(["train", "--config", cfg, *run, "--progress", "none"]) == 0
    assert "mean EOM" in capsys.readouterr().out
    fails(capsys, ["write-data", "--out", str(tmp_path / "d2"), "--set", "train.epochs=1"], "data.KEY=VALUE")


def test_a_damaged_data_file_is_named_with_its_split(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    cfg = _files_example(tmp_path, n_rct=300, n_obs=0, n_val=200, n_test=200)
    (tmp_path / "data" / "val.parquet").write_bytes(b"PAR1" + os.urandom(300) + b"PAR1")
    fails(capsys, ["train", "--config", cfg, "--out", str(tmp_path / "run")], "val.parquet", "split 'val'")


def test_every_option_has_help_text():
    import argparse

    from bidfcl.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {'/'.join(a.option_strings)}"
        for name, p in sub.choices.items()
        for a in p._actions
        if a.option_strings and a.dest != "help" and not a.help
    ]
    assert not missing, missing
    assert all(c.help for c in sub._choices_actions)
