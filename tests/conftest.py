"""What the test files share: fixtures, skip marks, dtype/device parametrisations and problem builders.

Fixtures are found by name. The plain helpers are imported (``from conftest import random_mckp``):
pytest puts tests/ on ``sys.path`` because tests/ is not a package. Every builder takes a seed and
draws from its own ``torch.Generator``, so a test's data does not depend on what ran before it.
"""

from __future__ import annotations

import os

import pytest
import torch

import bidfcl
from bidfcl.propensity import arm_propensity

F64 = torch.float64

# ---- marks and parametrisations -----------------------------------------------------------------

#: skip where the compiled extension is not loaded (BIDFCL_NO_EXTENSION=1 runs the package on the twins)
needs_ext = pytest.mark.skipif(not bidfcl.EXTENSION_LOADED, reason="needs the compiled extension")

#: marks of a test (or a ``pytest.param``) that needs a CUDA device: the ``cuda`` marker, skipped without one
CUDA_MARKS = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def needs_cuda(test):
    """Decorator: ``@needs_cuda`` puts CUDA_MARKS on a test."""
    for mark in reversed(CUDA_MARKS):
        test = mark(test)
    return test


#: ``@pytest.mark.parametrize("dtype", DTYPES)``: every op takes float32 and float64
DTYPES = [torch.float32, F64]
#: ``@pytest.mark.parametrize("device", DEVICES)``: the CPU, and CUDA where a device exists
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA_MARKS)]

# The CUDA test files (test_*_cuda.py) run on BIDFCL_CUDA_TEST_DEVICE (default "cuda"); "cpu" runs
# their device-independent checks with the CPU standing in for the device, a self-test of those files
# on a machine without a GPU.
CUDA_TEST_DEVICE = os.environ.get("BIDFCL_CUDA_TEST_DEVICE", "cuda")
#: ``pytestmark`` of a CUDA test file: the cuda marker; skipped without the extension, without a
#: device, or with an extension built without CUDA kernels (the last two only when the device is CUDA)
CUDA_FILE_MARKS = [
    pytest.mark.cuda,
    pytest.mark.skipif(not bidfcl.EXTENSION_LOADED, reason="needs the compiled extension"),
    pytest.mark.skipif(CUDA_TEST_DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(
        CUDA_TEST_DEVICE == "cuda" and bidfcl.EXTENSION_LOADED and not bidfcl.build_info().get("cuda", False),
        reason="extension built without CUDA kernels",
    ),
]


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (training results depend on the thread count), then restore."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---- problem builders ---------------------------------------------------------------------------


def random_mckp(n: int, m: int, seed: int, dtype: torch.dtype = F64, kind: str = "rand"):
    """Values and costs [n, m] of a random MCKP instance, drawn in float64 and cast to ``dtype``.

    kind "rand": uniform [0, 1) values and costs, option 0 free (cost 0: no incentive);
    "ties": small integers (values -2..4, costs 0..3), so equal costs, values and breakpoints abound;
    "dup": values 0..2 and costs {0, 0.5}: duplicated options, zero costs, equal values.
    """
    g = torch.Generator().manual_seed(seed)
    if kind == "rand":
        v = torch.rand(n, m, generator=g, dtype=F64)
        c = torch.rand(n, m, generator=g, dtype=F64)
        c[:, 0] = 0.0
    elif kind == "ties":
        v = torch.randint(-2, 5, (n, m), generator=g).to(F64)
        c = torch.randint(0, 4, (n, m), generator=g).to(F64)
    elif kind == "dup":
        v = torch.randint(0, 3, (n, m), generator=g).to(F64)
        c = torch.randint(0, 2, (n, m), generator=g).to(F64) * 0.5
    else:
        raise ValueError(f"random_mckp: kind must be 'rand', 'ties' or 'dup', got {kind!r}")
    return v.to(dtype), c.to(dtype)


def decision_batch(n: int = 12, m: int = 3, dtype: torch.dtype = F64, seed: int = 0, with_cost: bool = False):
    """Inputs of a decision loss: ``r_hat, c_hat, treatment, revenue, cost, propensity``.

    r_hat ~ N(0, 1) and c_hat ~ U[0, 1) of shape [n, m], treatment uniform over the m arms, revenue
    ~ N(0.5, 1), cost ~ U[0, 1) (None unless ``with_cost``: the primal losses take none), and
    propensity the arm shares of the treatment (``bidfcl.propensity.arm_propensity``).
    """
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, m, generator=g, dtype=F64).to(dtype)
    c = torch.rand(n, m, generator=g, dtype=F64).to(dtype)
    t = torch.randint(0, m, (n,), generator=g)
    rev = (torch.randn(n, generator=g, dtype=F64) + 0.5).to(dtype)
    cost = torch.rand(n, generator=g, dtype=F64).to(dtype) if with_cost else None
    return r, c, t, rev, cost, arm_propensity(t, m, dtype)


def with_bad_entries(spec: dict, **inputs: torch.Tensor) -> dict:
    """``inputs`` with the bad entries of one bad-input case written into copies.

    ``spec[name] = (index, value)`` sets ``inputs[name][index] = value`` (on a clone; the caller's
    tensor is untouched); inputs that ``spec`` does not name come back as they are. Keys of ``spec``
    that are not input names (a case's ``lam`` or ``budget``) are ignored.
    """
    out = {}
    for name, t in inputs.items():
        if name in spec:
            index, value = spec[name]
            t = t.clone()
            t[index] = value
        out[name] = t
    return out


def tiny_tsm_config(
    n_rct: int = 500,
    n_obs: int = 1000,
    n_val: int = 500,
    n_test: int = 800,
    hidden=(16, 8),
    epochs: int = 2,
    batch_size: int = 256,
) -> str:
    """TOML text of a tiny pooled-TSM run (seconds on one thread), ``progress = "none"``.

    The text ends inside the ``[output]`` section, so a caller may append ``dir = "..."``. The CLI tests
    (test_cli.py, test_cli_errors.py) build their configs with it.
    """
    return (
        f"[data]\nn_rct = {n_rct}\nn_obs = {n_obs}\nn_val = {n_val}\nn_test = {n_test}\n"
        f"[model]\nhidden = {list(hidden)}\n"
        f'[train]\nmethod = "tsm"\nepochs = {epochs}\nbatch_size = {batch_size}\n'
        '[tsm]\ndata = "pooled"\n'
        '[output]\nprogress = "none"\n'
    )


@pytest.fixture(scope="module")
def data():
    """The tiny synthetic run data (RCT, OBS, validation, test) of the trainer tests
    (``_train_common.TINY``), made once per test module."""
    from _train_common import TINY

    from bidfcl.train import config_from_dict, load_run_data

    return load_run_data(config_from_dict({"data": TINY}).data)
