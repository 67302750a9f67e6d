"""Devices: train.device resolution and errors, the loop's device-side loss bookkeeping (exercised on
the CPU), and CUDA-vs-CPU training where a GPU exists."""

import pytest
import torch

from bidfcl.data import make_marketing
from bidfcl.devices import DeviceError, resolve_device
from bidfcl.train import ConfigError, make_trainer
from bidfcl.train.loop import TrainingDiverged

HAS_CUDA = torch.cuda.is_available()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    md = make_marketing(n_rct=500, n_obs=1000, n_val=300, n_test=300, seed=2)
    return {"rct": md.rct, "obs": md.obs, "val": md.val, "test": md.test}


def cfg(method="tsm", **train):
    t = {"method": method, "epochs": 2, "batch_size": 128, "warm_start_epochs": 1, **train}
    return {
        "model": {"hidden": [8]},
        "train": t,
        "output": {"progress": "none"},
        "tsm": {"data": "pooled"},
        "bidfcl": {"teacher_epochs": 1},
    }


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    with pytest.raises(DeviceError, match="expected train.device"):
        resolve_device("gpu0", "train.device")
    with pytest.raises(DeviceError, match="'cpu' or 'cuda' devices"):
        resolve_device("meta")
    if not HAS_CUDA:
        with pytest.raises(DeviceError, match="CPU-only build|no CUDA device"):
            resolve_device("cuda:0", "train.device")
    else:
        with pytest.raises(DeviceError, match="CUDA device\\(s\\)"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_bad_device_in_config(data):
    with pytest.raises(ConfigError, match="train.device"):
        make_trainer(cfg(device="tpu"), data)
    if not HAS_CUDA:
        with pytest.raises(DeviceError, match="train.device = 'cuda'"):
            make_trainer(cfg(device="cuda"), data)


@pytest.mark.parametrize("method", ["tsm", "dfcl", "bidfcl"])
def test_deferred_loss_reads_give_the_same_run(data, method):
    """The accelerator bookkeeping (losses kept as device tensors, read once per epoch), run on the
    CPU, gives exactly the history and model of the per-batch reads."""
    a = make_trainer(cfg(method, device="cpu"), data)
    b = make_trainer(cfg(method, device="cpu"), data)
    b.defer_loss_reads = True
    ra, rb = a.fit(), b.fit()
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(ra["history"]) == strip(rb["history"])
    assert ra["evaluation"]["eom"] == rb["evaluation"]["eom"]
    for p, q in zip(a.deployed.parameters(), b.deployed.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("loss", ["ppl", "pifd", "dpl"])
def test_lazy_checks_give_the_same_dfcl_run(data, loss):
    """The accelerator path of DFCL's step (solver and losses with check=False, their status records
    checked when the losses are read), run on the CPU, gives exactly the eager run."""
    a = make_trainer(cfg("dfcl", device="cpu", loss=loss), data)
    b = make_trainer(cfg("dfcl", device="cpu", loss=loss), data)
    b.defer_loss_reads = b.lazy_checks = True
    ra, rb = a.fit(), b.fit()
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(ra["history"]) == strip(rb["history"])
    for p, q in zip(a.deployed.parameters(), b.deployed.parameters()):
        assert torch.equal(p, q)
    assert b._statuses == []  # every record was read at the epoch ends


def test_lazy_checks_catch_divergence_at_the_same_batch(data):
    """With lazy checks a diverging DFCL run stops with the eager run's message (epoch, batch)."""
    messages = []
    for lazy in (False, True):
        t = make_trainer(cfg("dfcl", device="cpu", lr=1e12, epochs=3, warm_start_epochs=0), data)
        t.defer_loss_reads = t.lazy_checks = lazy
        with pytest.raises(TrainingDiverged) as exc:
            t.fit()
        messages.append(str(exc.value))
    batch = lambda m: m.split(" (")[0]  # noqa: E731  (where it stopped; the reason reads differently)
    assert batch(messages[0]) == batch(messages[1]), messages


def test_lazy_status_records_raise_the_eager_message_when_read(data):
    """A status record of a check=False call that failed: at the next read of the losses it raises
    the eager call's message; with non-finite parameters, the divergence message at its batch."""
    import bidfcl
    from bidfcl._validate import InputError
    from bidfcl.train.loop import TrainingDiverged

    t = make_trainer(cfg("dfcl", device="cpu"), data)
    v = torch.rand(6, 3)
    v[4, 1] = float("nan")
    bad = bidfcl.solve_mckp(v, torch.rand(6, 3), 1.0, check=False)
    with pytest.raises(InputError) as eager:
        bidfcl.solve_mckp(v, torch.rand(6, 3), 1.0)
    phase = t.phases()[-1]
    t._statuses = [
        (3, [bidfcl.solve_mckp(torch.rand(6, 3), torch.rand(6, 3), 1.0, check=False).status]),
        (5, [bad.status]),
    ]
    with pytest.raises(InputError) as lazy:
        t._settle(phase, 0)
    assert str(lazy.value) == str(eager.value) and t._statuses == []
    with torch.no_grad():
        next(t.model.parameters()).fill_(float("nan"))
    t._statuses = [(5, [bad.status])]
    with pytest.raises(
        TrainingDiverged, match=r"epoch 1, batch 6 \(non-finite parameters \(bidfcl: values must be finite"
    ):
        t._settle(phase, 0)


def test_deferred_reads_still_catch_divergence(data):
    t = make_trainer(cfg("tsm", device="cpu", lr=1e10, epochs=3), data)
    t.defer_loss_reads = True
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, batch \d+ \(loss mse is not finite\)"):
        t.fit()


def test_auto_device_keeps_cpu_results(data):
    ra = make_trainer(cfg("tsm", device="cpu"), data).fit()
    rb = make_trainer(cfg("tsm", device="auto"), data).fit()
    if not HAS_CUDA:
        assert ra["evaluation"]["eom"] == rb["evaluation"]["eom"]


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["tsm", "dfcl", "bidfcl"])
def test_cuda_training_matches_cpu(data, method):
    """Each trainer on CUDA: models, batches, solver and losses on the GPU; the decision quality
    agrees with the CPU run to float32 noise (not bitwise: other kernels, other reduction orders)."""
    rc = make_trainer(cfg(method, device="cpu"), data).fit()
    t = make_trainer(cfg(method, device="cuda"), data)
    assert next(t.deployed.parameters()).device.type == "cuda" and t.data.rct.x.device.type == "cuda"
    rg = t.fit()
    assert rg["evaluation"]["eom_mean"] == pytest.approx(rc["evaluation"]["eom_mean"], rel=0.05)


def test_dfcl_step_without_host_reads_falls_back_to_the_prediction_loss(data):
    """Where no budget is reachable (a per-capita budget below the cheapest predicted policy, paid
    option costs all > 0), the DFCL step is exactly a prediction-loss Adam step, chosen on the device;
    the undefined decision loss is left out of the running mean."""
    import copy

    from bidfcl.train.dfcl import decision_loss_terms
    from bidfcl.train.loop import factual_loss

    c = cfg("dfcl", budgets=[1e-9], budget_unit="per_capita")
    c["model"]["free_options"] = []
    t = make_trainer(c, data)
    batch = t.rows.subset(torch.arange(128))
    r, cc = t.model(batch.x)
    loss, defined = decision_loss_terms("ppl", r, cc, batch, t.train_budgets)
    assert not bool(defined) and torch.isfinite(loss)
    ref = copy.deepcopy(t.model)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=c["train"].get("lr", 1e-3))
    ref_opt.load_state_dict(t.opt.state_dict())
    ref_opt.zero_grad()
    factual_loss(*ref(batch.x), batch).backward()
    ref_opt.step()
    out = t.step(batch, torch.arange(128))
    assert float(out["infeasible"]) == 1.0 and float(out["ppl"][1]) == 0.0
    for p, q in zip(t.model.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    t._accumulate(t.phases()[1], 0, 0, out)
    assert "ppl" not in t.running and t.running["infeasible"] == (1.0, 1)
    # a reachable budget: defined, and the loss is the plain ppl loss
    loss2, defined2 = decision_loss_terms("ppl", r, cc, batch, [10.0])
    assert bool(defined2) and float(loss2.detach()) != 0.0
