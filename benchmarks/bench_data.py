"""Throughput of the data layer: the simulator (users/s) and the loaders (rows/s).

    PYTHONPATH=python python -m pytest benchmarks/bench_data.py --benchmark-only -q

Correctness first (thread count does not change the sample; every format loads the same rows),
then timings. The peer of the parallel generator is the same generator on one thread.
Larger runs (not part of the suite): ``BIDFCL_BENCH_USERS=10000000`` for the 10M-user timing.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bidfcl.data import load_criteo_uplift, make_marketing

USERS = int(os.environ.get("BIDFCL_BENCH_USERS", 1_000_000))
ROWS = 300_000


def _gen(threads: int):
    return make_marketing(n_rct=USERS // 11, n_obs=USERS - USERS // 11, n_val=0, n_test=0, seed=0, num_threads=threads)


def test_generator_threads_agree():
    a = make_marketing(n_rct=0, n_obs=300_000, n_val=0, n_test=0, num_threads=1)
    b = make_marketing(n_rct=0, n_obs=300_000, n_val=0, n_test=0, num_threads=2)
    assert torch.equal(a.obs.revenue, b.obs.revenue) and torch.equal(a.obs.r_true, b.obs.r_true)


@pytest.mark.parametrize("threads", [1, 2])
def test_bench_make_marketing(benchmark, threads):
    benchmark.group = f"make_marketing {USERS} users"
    benchmark.pedantic(_gen, args=(threads,), rounds=2, iterations=1, warmup_rounds=0)
    benchmark.extra_info["users_per_s"] = USERS / benchmark.stats.stats.mean


@pytest.fixture(scope="module")
def criteo_files(tmp_path_factory):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    cols = {f"f{k}": rng.normal(10 * k, 1 + k, ROWS).astype(np.float32) for k in range(12)}
    for name, p in (("treatment", 0.85), ("conversion", 0.003), ("visit", 0.047), ("exposure", 0.03)):
        cols[name] = (rng.random(ROWS) < p).astype(np.int8)
    table = pa.table(cols)
    d = tmp_path_factory.mktemp("criteo")
    paths = {"csv": d / "c.csv", "csv.gz": d / "c.csv.gz", "parquet": d / "c.parquet"}
    pacsv.write_csv(table, paths["csv"])
    with pa.CompressedOutputStream(str(paths["csv.gz"]), "gzip") as out:
        pacsv.write_csv(table, out)
    pq.write_table(table, paths["parquet"])
    ref = load_criteo_uplift(paths["parquet"])
    for p in paths.values():  # correctness first: every format gives the same rows
        ds = load_criteo_uplift(p)
        assert torch.equal(ds.x, ref.x) and torch.equal(ds.treatment, ref.treatment)
    return paths


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
def test_bench_load_criteo(benchmark, criteo_files, fmt):
    benchmark.group = f"load_criteo_uplift {ROWS} rows"
    benchmark.pedantic(load_criteo_uplift, args=(criteo_files[fmt],), rounds=2, iterations=1)
    benchmark.extra_info["rows_per_s"] = ROWS / benchmark.stats.stats.mean
