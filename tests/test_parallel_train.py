"""Data-parallel training (bidfcl.train.parallel) with 2 gloo processes on loopback: the ranks
train on their shards of the same global batches and must reproduce the one-process run; bad
input on one rank stops every rank with a clear message; a resumed run is exact."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from bidfcl.train import config_from_dict, load_run_data, make_trainer
from bidfcl.train.parallel import RowShard, shard_bounds

pytestmark = pytest.mark.usefixtures("one_thread")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# odd sizes: uneven shards, a short last batch
DATA = {"n_rct": 701, "n_obs": 1501, "n_val": 499, "n_test": 503, "seed": 3, "dtype": "float64"}
METHODS = {
    "tsm": {"method": "tsm"},
    "dfcl": {"method": "dfcl", "warm_start_epochs": 2},
    "bidfcl": {"method": "bidfcl", "warm_start_epochs": 1},
}
#: each method's own config section
SECTIONS = {
    "tsm": {"tsm": {"data": "pooled"}},
    "dfcl": {},
    "bidfcl": {"bidfcl": {"teacher_epochs": 2, "rct_batch_size": 300, "bridge_every": 2}},
}


def _config(method: str, **train) -> dict:
    return {
        "data": dict(DATA),
        "train": dict(METHODS[method], **dict({"epochs": 2, "batch_size": 256}, **train)),
        "output": {"progress": "none"},
        **{k: dict(v) for k, v in SECTIONS[method].items()},
    }


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _launch(runs: list, tmp_path, world: int = 2, timeout: float = 300.0) -> list:
    """Run the worker on ``world`` ranks; returns per rank its list of records."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "python"), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
    )
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.join(HERE, "_train_worker.py"),
                str(r),
                str(world),
                port,
                json.dumps(runs),
                str(tmp_path),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    try:
        logs = [p.communicate(timeout=timeout)[0].decode(errors="replace") for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("a rank hung (timeout)")
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} exited {p.returncode}:\n{log[-3000:]}"
    return [torch.load(os.path.join(tmp_path, f"rank{r}.pt"), weights_only=False) for r in range(world)]


def _single(cfg: dict, **kw):
    c = config_from_dict(cfg)
    tr = make_trainer(c, load_run_data(c.data), **kw)
    return tr, tr.fit()


def test_shard_bounds_and_row_shard():
    for n in (5, 6, 7, 701):
        for world in (1, 2, 3):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(h - lo for lo, h in bounds) - min(h - lo for lo, h in bounds) <= 1
    a, b = RowShard.of(10, 5, 10), RowShard.of(20, 10, 20)
    pooled = RowShard.concat([a, b])
    assert pooled.n_global == 30 and pooled.n_local == 15
    idx = torch.tensor([29, 3, 7, 10, 20, 5])
    # global 7 -> rct row 7 (local 2); 20 -> obs row 10 (local 5 + 0); 29 -> obs row 19 (local 14)
    assert pooled.local(idx).tolist() == [14, 2, 5, 0]


def test_two_ranks_reproduce_one_process(tmp_path):
    """TSM (pooled), DFCL and Bi-DFCL on 2 ranks: the same parameters, validation selections and
    test metrics as one process on the same global batches (float64: up to summation order)."""
    runs = [{"config": _config(m)} for m in METHODS]
    ranks = _launch(runs, tmp_path)
    for i, method in enumerate(METHODS):
        tr, res = _single(_config(method))
        for r, records in enumerate(ranks):
            rec = records[i]
            assert rec["ok"], f"{method} rank {r}: {rec.get('trace', rec.get('error'))}"
            assert rec["world_size"] == 2
            for k, v in tr.deployed.state_dict().items():
                torch.testing.assert_close(rec["state"][k], v, rtol=1e-9, atol=1e-10, msg=f"{method} rank {r} {k}")
            ev, ev1 = rec["evaluation"], res["evaluation"]
            assert ev["lam"] == pytest.approx(ev1["lam"], rel=1e-9, abs=1e-12)
            for key in ("eom", "eom_se", "eom_cost", "true_value", "oracle_value"):
                assert ev[key] == pytest.approx(ev1[key], rel=1e-9, abs=1e-12), (method, key)
            assert ev["feasible"] == ev1["feasible"]
            # the logged epoch means are global (every rank's part of every batch)
            for h, h1 in zip(rec["history"], res["history"]):
                assert h.keys() == h1.keys()
                for key in h1:
                    if key != "seconds" and isinstance(h1[key], float):
                        assert h[key] == pytest.approx(h1[key], rel=1e-8, abs=1e-10), (method, h1["phase"], key)
        # both ranks hold the same model
        for k in ranks[0][i]["state"]:
            assert torch.equal(ranks[0][i]["state"][k], ranks[1][i]["state"][k])


def test_two_ranks_resume_exactly_from_rank_zero_checkpoint(tmp_path):
    """An interrupted 2-rank Bi-DFCL run (stopped after a mid-epoch checkpoint) resumed on 2 ranks
    ends with exactly the parameters of the uninterrupted 2-rank run; only rank 0 writes files."""
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    cfg = _config("bidfcl")
    cfg_whole = json.loads(json.dumps(cfg))
    cfg_whole["output"].update(dir=whole, checkpoint_every=2)
    cfg_part = json.loads(json.dumps(cfg))
    cfg_part["output"].update(dir=part, checkpoint_every=2)
    runs = [{"config": cfg_whole}, {"config": cfg_part, "crash_after_saves": 7}, {"config": cfg_part, "resume": True}]
    ranks = _launch(runs, tmp_path)
    for r, (done, crashed, resumed) in enumerate(ranks):
        assert done["ok"], done.get("trace")
        assert crashed.get("crashed"), crashed
        assert resumed["ok"], resumed.get("trace")
        for k in done["state"]:
            assert torch.equal(resumed["state"][k], done["state"][k]), (r, k)
        assert resumed["evaluation"] == done["evaluation"]
    assert sorted(os.listdir(whole)) == ["checkpoint.pt", "history.csv", "metrics.json", "model.pt"]


def test_bad_input_on_one_rank_stops_every_rank(tmp_path):
    """A device that does not exist on rank 1 only, a split with fewer rows than ranks, and an
    option the ablation cannot run in parallel: every rank raises, naming the rank and the problem
    (no rank waits in a collective), and the group is still usable for the next run."""
    good = _config("tsm", epochs=1)
    tiny = _config("tsm", epochs=1)
    tiny["data"]["n_val"] = 1
    runs = [
        {"config": good, "on_rank": {"1": {"train.device": "cuda:3"}}},
        {"config": tiny},
        {"config": dict(_config("bidfcl"), bidfcl={"hypergradient": "unrolled"})},
        {"config": good, "on_rank": {"0": {"train.lr": 0.5}}},
        {"config": _config("tsm", device="cuda:0")},
        {"config": good, "on_rank": {"1": {"data.n_features": 7}}},
        {"config": good},
    ]
    ranks = _launch(runs, tmp_path)
    for device, small, unrolled, config, one_gpu, features, after in ranks:
        assert not device["ok"] and "rank 1" in device["error"] and "train.device" in device["error"], device
        assert "cuda:3" in device["error"]
        assert not small["ok"] and "'val' has 1 rows, fewer than the 2 ranks" in small["error"], small
        assert not unrolled["ok"] and "unrolled" in unrolled["error"] and "one process" in unrolled["error"]
        assert not config["ok"] and "different configurations" in config["error"], config
        assert not one_gpu["ok"] and "every rank on one GPU" in one_gpu["error"], one_gpu
        assert not features["ok"] and "different" in features["error"] and "rank 1" in features["error"], features
        assert after["ok"], after.get("trace")


def _write_files(folder, drop_arm=None):
    from bidfcl.data import make_marketing, write_splits

    md = make_marketing(n_rct=901, n_obs=2001, n_val=401, n_test=503, seed=5)
    splits = {"rct": md.rct, "obs": md.obs, "val": md.val, "test": md.test}
    if drop_arm is not None:
        keep = torch.nonzero(md.rct.treatment != drop_arm).squeeze(1)
        splits["rct"] = md.rct.subset(keep)
    write_splits(splits, folder)
    return md.rct.n_features


def _files_config(folder, out, features) -> str:
    feats = ", ".join(f'"f{j}"' for j in range(features))
    text = f"""[data]
source = "files"
rct = "{folder}/rct.parquet"
obs = "{folder}/obs.parquet"
val = "{folder}/val.parquet"
test = "{folder}/test.parquet"
features = [{feats}]
treatment = "treatment"
revenue = "revenue"
cost = "cost"
[train]
method = "bidfcl"
epochs = 1
warm_start_epochs = 1
batch_size = 512
[bidfcl]
teacher_epochs = 2
[output]
dir = "{out}"
progress = "none"
"""
    path = os.path.join(out + ".toml")
    with open(path, "w") as fh:
        fh.write(text)
    return path


def _torchrun(args, timeout=300):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "python"), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        _free_port(),
        "-m",
        "bidfcl",
    ] + args
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_torchrun_cli_reads_shards_of_parquet_files_and_matches_one_process(tmp_path):
    """`torchrun --nproc_per_node 2 -m bidfcl train` on Parquet files: each rank reads its row range,
    the metrics equal those of `bidfcl train` in one process (float32: summation order), printed once."""
    from bidfcl.cli import main

    folder = str(tmp_path / "data")
    features = _write_files(folder)
    one = _files_config(folder, str(tmp_path / "one"), features)
    two = _files_config(folder, str(tmp_path / "two"), features)
    assert main(["train", "--config", one]) == 0
    p = _torchrun(["train", "--config", two])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert p.stdout.count("mean EOM") == 1 and "data-parallel training on 2 processes" in p.stdout
    m1 = json.load(open(tmp_path / "one" / "metrics.json"))["evaluation"]
    m2 = json.load(open(tmp_path / "two" / "metrics.json"))["evaluation"]
    assert m2["eom"] == pytest.approx(m1["eom"], rel=2e-3, abs=2e-3)
    assert m2["feasible"] == m1["feasible"]


def test_torchrun_cli_rct_file_missing_an_arm_fails_on_every_rank(tmp_path):
    folder = str(tmp_path / "data")
    features = _write_files(folder, drop_arm=2)
    cfg = _files_config(folder, str(tmp_path / "out"), features)
    p = _torchrun(["train", "--config", cfg])
    assert p.returncode != 0
    # both ranks say it (stderr of the two processes), naming the file and the arm, no traceback
    assert p.stderr.count("empty arm(s) [2] on all 2 ranks") == 2, p.stderr[-3000:]
    # (torchrun itself prints a traceback of its own when a child fails; bidfcl's ranks print none)
    assert "rct.parquet" in p.stderr and "bidfcl/" not in p.stderr.replace(folder, "")


def test_experiment_refuses_torchrun(monkeypatch, capsys):
    from bidfcl.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["experiment", "--config", os.path.join(ROOT, "examples", "decision_quality.toml")]) == 2
    err = capsys.readouterr().err
    assert "runs in one process" in err and "bidfcl train" in err and "Traceback" not in err
