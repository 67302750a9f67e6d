"""Hashes of trained parameters (and test EOM) of TSM, DFCL and Bi-DFCL variants at tiny sizes, to
check that a refactoring leaves training bit-identical.

    PYTHONPATH=python OMP_NUM_THREADS=1 python benchmarks/train_hash_check.py          # a tree before issue 14
    NEW=1 PYTHONPATH=python OMP_NUM_THREADS=1 python benchmarks/train_hash_check.py    # this tree

The runs are written in the flat [train] layout of before issue 14; with NEW=1 they are mapped to
the per-method sections by bidfcl.train.config.upgrade_run_config (train.k to both bridge_every and
unrolled_steps, what it meant). Compare the two outputs line by line (e.g. with diff)."""

import hashlib
import os

import torch

from bidfcl.train import config_from_dict, load_run_data, make_trainer

torch.set_num_threads(1)

NEW = os.environ.get("NEW") == "1"
TINY = {"n_rct": 600, "n_obs": 1200, "n_val": 600, "n_test": 1000}


def raw(train, bidfcl=None, dfcl=None):
    t = {"batch_size": 128, "lr": 3e-3, "epochs": 2, "warm_start_epochs": 1, "teacher_epochs": 1, **train}
    r = {"data": TINY, "model": {"hidden": [16, 8]}, "train": t, "output": {"progress": "none"}}
    if NEW:  # map flat keys to the branch's sections
        from bidfcl.train.config import upgrade_run_config

        r = upgrade_run_config(r)
    return r


RUNS = {
    "tsm-rct": {"method": "tsm"},
    "tsm-pooled": {"method": "tsm", "data": "pooled"},
    "dfcl-ppl": {"method": "dfcl", "loss": "ppl"},
    "dfcl-pifd": {"method": "dfcl", "loss": "pifd", "clip": 0.5},
    "dfcl-dpl": {"method": "dfcl", "loss": "dpl"},
    "dfcl-ppl-both-budgets": {
        "method": "dfcl",
        "loss": "ppl",
        "decision_heads": "both",
        "budget_fractions": [0.2, 0.4],
        "alpha": 0.1,
    },
    "bidfcl-ppl": {"method": "bidfcl", "loss": "ppl", "k": 2},
    "bidfcl-pifd-hessian": {"method": "bidfcl", "loss": "pifd", "k": 3, "curvature": "auto", "inner_steps": 2},
    "bidfcl-ppl-unrolled": {"method": "bidfcl", "loss": "ppl", "k": 3, "hypergradient": "unrolled"},
    "bidfcl-ppl-weight": {
        "method": "bidfcl",
        "loss": "ppl",
        "k": 2,
        "bridge_mode": "weight",
        "budgets": [30.0],
        "budget_unit": "total",
    },
}
data = None
for name, train in RUNS.items():
    cfg = config_from_dict(raw(train))
    if data is None:
        data = load_run_data(cfg.data)
    tr = make_trainer(cfg, data)
    res = tr.fit()
    h = hashlib.sha256()
    for _name, mod in sorted(tr.modules().items()):
        for k, v in mod.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().double().numpy().tobytes())
    eom = res["evaluation"]["eom"]
    h.update(repr([round(float(e), 12) for e in eom]).encode())
    print(f"{name:26s} {h.hexdigest()[:24]}")
