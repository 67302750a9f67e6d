"""bidfcl.train.config: run configurations, checked key by key, and the example configs."""

import os
import re

import pytest
from _train_common import cfg_of

from bidfcl.train import ConfigError, config_from_dict, load_config
from bidfcl.train.config import upgrade_run_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"trian": {}}, r"unknown section \[trian\] \(did you mean \[train\]\?\)"),
        ({"train": {"lrr": 1}}, r"unknown key 'lrr' in \[train\] \(did you mean 'lr'\?\)"),
        ({"train": {"epochs": "ten"}}, r"expected train.epochs to be an integer, got 'ten'"),
        ({"train": {"lr": -1.0}}, r"expected train.lr > 0"),
        ({"train": {"method": "gbdt"}}, r"expected train.method in \['tsm', 'dfcl', 'bidfcl'\]"),
        (
            {"train": {"method": "bidfcl", "loss": "mer"}},
            r"expected train.loss in \['ppl', 'pifd'\] for method 'bidfcl'",
        ),
        ({"train": {"budget_fraction": 1.5}}, r"budget_fraction in \(0, 1\]"),
        ({"model": {"hidden": [64, 0]}}, r"model.hidden to be positive integers"),
        ({"model": {"output": "relu"}}, r"model.output in"),
        ({"data": {"source": "files"}}, r"needs data.rct"),
        ({"data": {"source": "files", "rct": "/nonexistent.csv", "features": ["a"]}}, r"does not exist"),
        ({"eval": {"select": "auc"}}, r"eval.select"),
        ({"experiment": {"seeds": []}}, r"experiment.seeds"),
        ({"train": {"clip": 0}}, r"train.clip > 0"),
    ],
)
def test_bad_configs_say_what_is_wrong(raw, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


def test_load_config_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[train]\nmethod = "dfcl"\nepochs = 3\nlr = 1\n[data]\nn_rct = 100\n')
    cfg = load_config(p)
    assert cfg.train.method == "dfcl" and cfg.train.epochs == 3 and cfg.train.lr == 1.0 and cfg.data.n_rct == 100
    assert cfg.model.hidden == [128, 64, 32]
    cfg2 = load_config(p, {"train.epochs": 5})
    assert cfg2.train.epochs == 5
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_example_configs_load():
    root = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
    for name in ("bidfcl.toml", "tsm_pooled.toml", "experiment.toml"):
        cfg = load_config(os.path.join(root, name))
        assert cfg.train.method in ("tsm", "bidfcl")
    if not os.path.exists(os.path.join(root, "data", "rct.parquet")):
        with pytest.raises(ConfigError, match="rct.parquet.*does not exist"):
            load_config(os.path.join(root, "dfcl_files.toml"))


@pytest.mark.parametrize(
    "section,key,value,match",
    [
        ("eval", "budgets", [0.0], "eval.budgets"),
        ("eval", "budgets", [], "eval.budgets"),
        ("eval", "budget_unit", "euros", "eval.budget_unit"),
        ("train", "budget_fractions", [1.5], "train.budget_fractions"),
        ("dfcl", "decision_heads", "cost", "dfcl.decision_heads"),
        ("bidfcl", "curvature", "newton", "bidfcl.curvature"),
        ("bidfcl", "bridge_every", 0, "bidfcl.bridge_every >= 1"),
        ("bidfcl", "unrolled_steps", -1, "bidfcl.unrolled_steps >= 0"),
        ("model", "free_options", [-1], "model.free_options"),
    ],
)
def test_new_keys_reject_bad_values(section, key, value, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({section: {key: value}})


@pytest.mark.parametrize(
    "key,value,new",
    [
        ("k", 5, "bidfcl.bridge_every"),
        ("data", "pooled", "tsm.data"),
        ("alpha", 0.1, "dfcl.alpha"),
        ("decision_heads", "both", "dfcl.decision_heads"),
        ("curvature", "auto", "bidfcl.curvature"),
        ("teacher_epochs", 3, "bidfcl.teacher_epochs"),
    ],
)
def test_keys_moved_out_of_train_name_their_new_place(tmp_path, key, value, new):
    """An old flat [train] key fails in a dict, a file and an override, naming the new key."""
    match = rf"train\.{key} moved: use {re.escape(new)}"
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"train": {key: value}})
    with pytest.raises(ConfigError, match=match):
        config_from_dict({}).replace({f"train.{key}": value})
    p = tmp_path / "old.toml"
    p.write_text(f'[train]\nmethod = "bidfcl"\n{key} = {value!r}\n'.replace("'", '"'))
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_train_k_names_both_things_it_meant():
    with pytest.raises(ConfigError, match=r"bidfcl\.bridge_every .* or bidfcl\.unrolled_steps"):
        config_from_dict({"train": {"k": 5}})
    cfg = config_from_dict({"train": {"method": "bidfcl"}, "bidfcl": {"bridge_every": 7, "unrolled_steps": 3}})
    assert (cfg.bidfcl.bridge_every, cfg.bidfcl.unrolled_steps) == (7, 3)


def test_upgrade_run_config_maps_the_flat_layout():
    old = {
        "data": {"n_rct": 10},
        "train": {
            "method": "bidfcl",
            "epochs": 2,
            "k": 5,
            "alpha": 0.5,
            "data": "obs",
            "curvature": "auto",
            "loss": "pifd",
        },
    }
    new = upgrade_run_config(old)
    assert new == {
        "data": {"n_rct": 10},
        "train": {"method": "bidfcl", "epochs": 2, "loss": "pifd"},
        "bidfcl": {"bridge_every": 5, "unrolled_steps": 5, "curvature": "auto"},
        "dfcl": {"alpha": 0.5},
        "tsm": {"data": "obs"},
    }
    assert old["train"]["k"] == 5  # the argument is left as it was
    cfg = config_from_dict(new)
    assert cfg.bidfcl.bridge_every == 5 and cfg.dfcl.alpha == 0.5 and cfg.tsm.data == "obs"
    assert upgrade_run_config(cfg.to_dict()) == cfg.to_dict()  # today's layout is left alone


def test_a_registered_method_brings_its_own_config_section(tmp_path, data):
    """A trainer registers its section with its checks: it is read, checked, stored and trained
    with like the shared ones, without an edit of config.py."""
    from dataclasses import dataclass

    from bidfcl.train import METHODS, TsmTrainer, load_model, make_trainer, register_method
    from bidfcl.train.config import require, run_sections

    @dataclass
    class ToyConfig:
        rows: str = "pooled"
        strength: float = 1.0

    def check_toy(sec, cfg):
        require(sec.strength > 0, f"expected toy.strength > 0, got {sec.strength}")

    @register_method("toy", config=ToyConfig, check=check_toy, doc="TSM under another name (a test)")
    class ToyTrainer(TsmTrainer):
        pass

    try:
        assert "toy" in run_sections() and config_from_dict({}).toy == ToyConfig()
        cfg = cfg_of({"method": "toy", "epochs": 1}, toy={"strength": 2.0}, output={"dir": str(tmp_path)})
        assert cfg.toy.strength == 2.0 and cfg.to_dict()["toy"] == {"rows": "pooled", "strength": 2.0}
        with pytest.raises(ConfigError, match=r"expected toy\.strength > 0, got -1\.0"):
            config_from_dict({"toy": {"strength": -1.0}})
        with pytest.raises(ConfigError, match=r"unknown key 'strenght' in \[toy\] \(did you mean 'strength'\?\)"):
            config_from_dict({"toy": {"strenght": 1.0}})
        with pytest.raises(ConfigError, match=r"train\.strength moved: use toy\.strength \(section \[toy\]\)"):
            config_from_dict({"train": {"strength": 1.0}})
        trainer = make_trainer(cfg, data, out_dir=str(tmp_path))
        assert isinstance(trainer, ToyTrainer)
        trainer.fit()
        _, meta = load_model(str(tmp_path / "model.pt"))
        saved = meta["run_config"]
        assert saved["toy"] == {"rows": "pooled", "strength": 2.0} and saved["train"]["method"] == "toy"
        assert config_from_dict(saved).toy.strength == 2.0
    finally:
        METHODS.pop("toy", None)
    with pytest.raises(ConfigError, match=r"unknown section \[toy\]"):
        config_from_dict({"toy": {}})
