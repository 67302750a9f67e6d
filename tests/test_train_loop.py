"""bidfcl.train.loop: model selection on validation and exact resume from checkpoints."""

import copy
import os

import pytest
import torch
from _train_common import cfg_of, params

from bidfcl.train import BidfclTrainer, ConfigError, TsmTrainer, config_from_dict, load_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_model_selection_keeps_best_validation_epoch(data):
    cfg = cfg_of({"method": "tsm", "epochs": 5})
    tr = TsmTrainer(cfg, data)
    res = tr.fit()
    vals = [h["val_eom"] for h in res["history"]]
    best = res["best"]["tsm-rct"]
    assert best["metric"] == max(vals) and best["epoch"] == vals.index(max(vals)) + 1
    assert tr.validation_eom("model") == pytest.approx(best["metric"], rel=1e-12)


class Interrupt(Exception):
    pass


def _interrupted_then_resumed(make, out_dir, stop_after: int):
    tr = make(out_dir)
    phases = tr.phases
    count = {"n": 0}

    def patched():
        out = phases()
        for ph in out:
            step = ph.step

            def wrapped(batch, idx, step=step):
                if count["n"] == stop_after:
                    raise Interrupt()
                count["n"] += 1
                return step(batch, idx)

            ph.step = wrapped
        return out

    tr.phases = patched
    with pytest.raises(Interrupt):
        tr.fit()
    tr2 = make(out_dir)
    res = tr2.fit(resume=True)
    return tr2, res


def test_resume_reproduces_tsm_exactly(tmp_path, data):
    cfg = cfg_of({"method": "tsm", "epochs": 3}, output={"checkpoint_every": 2})
    full = TsmTrainer(cfg, data, out_dir=str(tmp_path / "full"))
    res_full = full.fit()
    tr2, res = _interrupted_then_resumed(lambda d: TsmTrainer(cfg, data, out_dir=d), str(tmp_path / "cut"), 7)
    for a, b in zip(params(full.model), params(tr2.model)):
        assert torch.equal(a, b)
    assert res["evaluation"]["eom"] == res_full["evaluation"]["eom"]
    assert [h["mse"] for h in res["history"]] == [h["mse"] for h in res_full["history"]]
    assert not [f for f in os.listdir(tmp_path / "cut") if f.endswith(".tmp")]


def test_resume_rejects_another_config(tmp_path, data):
    TsmTrainer(cfg_of({"method": "tsm", "epochs": 1}), data, out_dir=str(tmp_path)).fit()
    with pytest.raises(ConfigError, match="different configuration.*train.lr"):
        TsmTrainer(cfg_of({"method": "tsm", "epochs": 1, "lr": 0.1}), data, out_dir=str(tmp_path)).fit(resume=True)


def test_resume_reproduces_bidfcl_exactly(tmp_path, data):
    cfg = cfg_of(
        {"method": "bidfcl", "epochs": 2, "warm_start_epochs": 1},
        bidfcl={"teacher_epochs": 1, "cg_iters": 5, "bridge_every": 2, "rct_batch_size": 200},
        output={"checkpoint_every": 3},
    )
    full = BidfclTrainer(cfg, data, out_dir=str(tmp_path / "full"))
    full.fit()
    nb_teacher, nb_warm = 5, 10
    tr2, _ = _interrupted_then_resumed(
        lambda d: BidfclTrainer(cfg, data, out_dir=d), str(tmp_path / "cut"), nb_teacher + nb_warm + 4
    )
    for name in ("teacher", "target", "bridge"):
        for a, b in zip(params(full.modules()[name]), params(tr2.modules()[name])):
            assert torch.equal(a, b), name


def _flat_layout(run_config: dict) -> dict:
    """A run config as checkpoints stored it before the per-method sections: one flat [train]."""
    d = copy.deepcopy(run_config)
    b = d.pop("bidfcl")
    b["k"] = b.pop("bridge_every")
    del b["unrolled_steps"]
    d["train"].update(**d.pop("tsm"), **d.pop("dfcl"), **b)
    return d


def test_checkpoints_from_before_the_sections_resume_and_load(tmp_path, data):
    """A checkpoint or model file whose run config has the old flat [train] is read in today's
    layout: the same run resumes from it, and its config builds again."""
    cfg = cfg_of({"method": "tsm", "epochs": 3}, tsm={"data": "pooled"}, output={"checkpoint_every": 2})
    full = TsmTrainer(cfg, data, out_dir=str(tmp_path / "full"))
    res_full = full.fit()
    cut = str(tmp_path / "cut")
    tr = TsmTrainer(cfg, data, out_dir=cut)
    phases = tr.phases

    def stop_early():
        out = phases()
        step = out[0].step
        count = {"n": 0}

        def wrapped(batch, idx):
            if count["n"] == 20:
                raise Interrupt()
            count["n"] += 1
            return step(batch, idx)

        out[0].step = wrapped
        return out

    tr.phases = stop_early
    with pytest.raises(Interrupt):
        tr.fit()
    path = os.path.join(cut, "checkpoint.pt")
    blob = torch.load(path, weights_only=False)
    assert "tsm" in blob["run_config"]
    blob["run_config"] = _flat_layout(blob["run_config"])
    assert blob["run_config"]["train"]["data"] == "pooled" and "tsm" not in blob["run_config"]
    torch.save(blob, path)
    res = TsmTrainer(cfg, data, out_dir=cut).fit(resume=True)
    assert res["evaluation"]["eom"] == res_full["evaluation"]["eom"]
    model_path = str(tmp_path / "full" / "model.pt")
    blob = torch.load(model_path, weights_only=False)
    blob["run_config"] = _flat_layout(blob["run_config"])
    torch.save(blob, model_path)
    _, meta = load_model(model_path)
    assert config_from_dict(meta["run_config"]) == cfg
    # a config that differs from the old checkpoint's is still refused, naming the new key
    blob = torch.load(path, weights_only=False)
    blob["run_config"] = _flat_layout(blob["run_config"])
    blob["run_config"]["train"]["data"] = "obs"
    torch.save(blob, path)
    with pytest.raises(ConfigError, match=r"different configuration.*tsm\.data"):
        TsmTrainer(cfg, data, out_dir=cut).fit(resume=True)
