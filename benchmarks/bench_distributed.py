"""Scaling out: the distributed exact solve on 1 vs 2 gloo processes, and out-of-core allocate.

    PYTHONPATH=python python benchmarks/bench_distributed.py solve      # N = 4M, M = 8: P = 1, 2
    PYTHONPATH=python python benchmarks/bench_distributed.py allocate   # 20M users, --chunk-rows 1000000
    PYTHONPATH=python python benchmarks/bench_distributed.py epoch      # one Bi-DFCL epoch: P = 1, 2

solve: every rank builds the same problem (``random_allocation_problem``, float32, one budget at
30% of the way from the cheapest to the dearest policy) and solves its contiguous shard with
``bidfcl.distributed.solve_mckp``, one thread per process. Correctness first: P = 1 is checked
against ``bidfcl.solve_mckp`` (lam bit for bit, every choice), P = 2 against P = 1 (lam, totals,
a checksum of the choices). Reported: median time of 3 solves after a warm-up, and the bytes the
collectives moved per solve (they depend on bins and candidates, not on N: shown at two N).

allocate: writes a 20M-row Parquet file with 4 features (row groups of 1M), a small model, then
runs ``bidfcl allocate`` twice under ``/usr/bin/time -v``: streamed (``--chunk-rows 1000000``) and
in memory (``--chunk-rows 0``); checks the two plans are equal, reports peak RSS and users/s, and
deletes the files.

epoch: one Bi-DFCL epoch (the main phase, default configuration) on the data of
``benchmarks/bench_epoch.py`` (2k RCT + 100k OBS rows, batch 1024) in 1 and in 2 gloo processes
(data-parallel training, ``bidfcl.train.parallel``), one thread per process. Reported: the epoch
time of each and the ratio, after checking that the 2-process model's test EOM equals the
1-process one (float32: up to summation order).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
M = 8


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


# -------------------------------------------------------------------------------- solve, per rank
def _rank_main(rank: int, world: int, port: str, n: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    import bidfcl
    from bidfcl import distributed as bd
    from bidfcl.bench import random_allocation_problem

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    values, costs = random_allocation_problem(n, M, seed=0, dtype=torch.float32)
    low, high = float(costs.min(1).values.double().sum()), float(costs.max(1).values.double().sum())
    budget = low + 0.3 * (high - low)
    a, b = rank * n // world, (rank + 1) * n // world
    v, c = values[a:b].clone(), costs[a:b].clone()
    del values, costs
    sol = bd.solve_mckp(v, c, budget)  # warm-up
    times = []
    for _ in range(3):
        dist.barrier()
        t0 = time.perf_counter()
        sol = bd.solve_mckp(v, c, budget)
        times.append(time.perf_counter() - t0)
    stats = bd.last_stats()
    checksum = int((sol.choice * torch.arange(a, b) % 1_000_003).sum())
    record = {
        "rank": rank,
        "world": world,
        "n": n,
        "time_s": sorted(times)[1],
        "bytes": stats["bytes"],
        "collectives": stats["collectives"],
        "rounds": stats["rounds"],
        "lam": float(sol.lam),
        "bracketed_rows": stats.get("bracketed_rows"),
        "spend": float(sol.spend),
        "value": float(sol.value),
        "checksum": checksum,
    }
    if world == 1:  # correctness and the single-process peer
        ref = bidfcl.solve_mckp(v, c, budget)
        assert torch.equal(ref.lam, sol.lam) and torch.equal(ref.choice, sol.choice), "P = 1 differs from solve_mckp"
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            bidfcl.solve_mckp(v, c, budget)
            ts.append(time.perf_counter() - t0)
        record["single_process_time_s"] = sorted(ts)[1]
    with open(os.path.join(out, f"r{rank}.json"), "w") as fh:
        json.dump(record, fh)
    dist.destroy_process_group()


def _run_world(world: int, n: int) -> list[dict]:
    out = tempfile.mkdtemp(prefix="bench-dist-")
    port = _port()
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([sys.executable, __file__, "_rank", str(r), str(world), port, str(n), out], env=env)
        for r in range(world)
    ]
    for p in procs:
        if p.wait(timeout=900) != 0:
            raise SystemExit(f"a rank of the P = {world} run failed")
    recs = [json.load(open(os.path.join(out, f"r{r}.json"))) for r in range(world)]
    return recs


def bench_solve() -> None:
    results = {}
    for world, n in ((1, 4_000_000), (2, 4_000_000), (2, 500_000)):
        recs = _run_world(world, n)
        results[(world, n)] = recs
        r0 = recs[0]
        line = (
            f"P = {world}, N = {n:,}: {r0['time_s'] * 1e3:8.1f} ms per solve (slowest rank "
            f"{max(r['time_s'] for r in recs) * 1e3:.1f} ms), {r0['bytes']:,} bytes in {r0['collectives']} "
            f"collectives ({r0['rounds']} rounds) per rank; rows whose hull entered the selection: "
            f"{r0['bracketed_rows'] if r0['bracketed_rows'] is not None else 'all'}"
        )
        if "single_process_time_s" in r0:
            line += f"; bidfcl.solve_mckp on the same rows: {r0['single_process_time_s'] * 1e3:.1f} ms"
        print(line, flush=True)
    one, two = results[(1, 4_000_000)][0], results[(2, 4_000_000)]
    assert one["lam"] == two[0]["lam"], "lam differs between P = 1 and P = 2"
    assert abs(one["spend"] - two[0]["spend"]) <= 1e-9 * abs(one["spend"])
    assert one["checksum"] == sum(r["checksum"] for r in two), "choices differ between P = 1 and P = 2"
    t2 = max(r["time_s"] for r in two)
    print(
        f"correct: P = 2 equals P = 1 (lam {one['lam']:.9g}, choices checksum); speed-up P = 2 vs P = 1: "
        f"{one['time_s'] / t2:.2f}x; bytes at N = 4M vs 0.5M: {two[0]['bytes']:,} vs "
        f"{results[(2, 500_000)][0]['bytes']:,} (independent of N)"
    )


# ---------------------------------------------------------------------------------------- allocate
def _timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return wall, rss_kb / 1024**2, p.stdout


def bench_allocate(n: int = 20_000_000, chunk: int = 1_000_000) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from bidfcl.models import MultiHeadMLP
    from bidfcl.train import save_model

    folder = tempfile.mkdtemp(prefix="bench-alloc-", dir=os.environ.get("BENCH_DIR", ROOT))
    users, model_path = os.path.join(folder, "users.parquet"), os.path.join(folder, "model.pt")
    try:
        torch.manual_seed(0)
        model = MultiHeadMLP(4, 4, hidden=(32, 16))
        save_model(model, model_path)
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        with pq.ParquetWriter(users, pa.schema([(f"x{j}", pa.float64()) for j in range(4)])) as w:
            for start in range(0, n, 1_000_000):
                k = min(1_000_000, n - start)
                w.write_table(pa.table({f"x{j}": rng.standard_normal(k) for j in range(4)}))
        print(
            f"wrote {n:,} users x 4 features ({os.path.getsize(users) / 1e6:.0f} MB) in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        # a binding budget: 30% of the way from the cheapest to the dearest policy (from a sample)
        import bidfcl

        r_hat, c_hat = model.predict(torch.randn(100_000, 4, generator=torch.Generator().manual_seed(1)))
        frontier = bidfcl.budget_frontier(r_hat, c_hat.clamp_min(0.0))
        low, high = float(frontier.spend[0]) / 100_000, float(frontier.spend[-1]) / 100_000
        per_capita = low + 0.3 * (high - low)
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), OMP_NUM_THREADS="1")
        base = [
            sys.executable,
            "-m",
            "bidfcl",
            "allocate",
            "--model",
            model_path,
            "--input",
            users,
            "--budget",
            f"{per_capita:.6f}",
            "--threads",
            "1",
        ]
        plan_s, plan_m = os.path.join(folder, "stream.parquet"), os.path.join(folder, "memory.parquet")
        ws, rs, out_s = _timed(base + ["--chunk-rows", str(chunk), "--output", plan_s], env)
        print(out_s.strip())
        print(f"streamed (--chunk-rows {chunk:,}): {ws:.1f} s, {n / ws:,.0f} users/s, peak RSS {rs:.2f} GB", flush=True)
        wm, rm, out_m = _timed(base + ["--chunk-rows", "0", "--output", plan_m], env)
        print(out_m.strip())
        print(f"in memory (--chunk-rows 0): {wm:.1f} s, {n / wm:,.0f} users/s, peak RSS {rm:.2f} GB", flush=True)
        a = pq.read_table(plan_s, columns=["option", "expected_spend"])
        b = pq.read_table(plan_m, columns=["option", "expected_spend"])
        same = a.column("option").equals(b.column("option")) and a.column("expected_spend").equals(
            b.column("expected_spend")
        )
        print(
            f"plans equal: {same}; streamed throughput = {wm / ws:.0%} of in-memory; "
            f"peak RSS {rs:.2f} GB vs {rm:.2f} GB"
        )
        assert same, "the streamed plan differs from the in-memory plan"
    finally:
        for f in os.listdir(folder):
            os.remove(os.path.join(folder, f))
        os.rmdir(folder)


# ------------------------------------------------------------------------------------------- epoch
def _epoch_rank(rank: int, world: int, port: str, out: str) -> None:
    import torch

    sys.path.insert(0, HERE)
    from bench_epoch import DATA

    from bidfcl.train import config_from_dict, load_run_data, make_trainer

    torch.set_num_threads(1)
    if world > 1:
        import torch.distributed as dist

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = config_from_dict(
        {
            "data": DATA,
            "train": {"method": "bidfcl", "teacher_epochs": 2, "warm_start_epochs": 1, "epochs": 2, "batch_size": 1024},
            "eval": {"select": "last"},
            "output": {"progress": "none"},
        }
    )
    res = make_trainer(cfg, load_run_data(cfg.data)).fit()
    main = [k for k in res["epoch_seconds"] if k != "teacher" and not k.endswith("warm")][-1]
    with open(os.path.join(out, f"e{rank}.json"), "w") as fh:
        json.dump({"epoch_s": res["epoch_seconds"][main], "eom": res["evaluation"]["eom"]}, fh)


def bench_epoch() -> None:
    times = {}
    for world in (1, 2):
        out = tempfile.mkdtemp(prefix="bench-epoch-")
        port = _port()
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), OMP_NUM_THREADS="1")
        procs = [
            subprocess.Popen([sys.executable, __file__, "_epoch", str(r), str(world), port, out], env=env)
            for r in range(world)
        ]
        if any(p.wait(timeout=1800) != 0 for p in procs):
            raise SystemExit(f"a rank of the P = {world} epoch run failed")
        times[world] = [json.load(open(os.path.join(out, f"e{r}.json"))) for r in range(world)]
    one, two = times[1][0], times[2]
    assert two[0]["eom"] == two[1]["eom"], "the two ranks disagree"
    mean1, mean2 = sum(one["eom"]) / len(one["eom"]), sum(two[0]["eom"]) / len(two[0]["eom"])
    t2 = max(r["epoch_s"] for r in two)
    print(
        f"one Bi-DFCL epoch (2k RCT + 100k OBS, batch 1024): 1 process {one['epoch_s']:.2f} s, "
        f"2 processes {t2:.2f} s (slowest rank): speed-up {one['epoch_s'] / t2:.2f}x; mean test EOM "
        f"{mean1:.5f} vs {mean2:.5f} (float32: 2 epochs of summation-order differences)"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["_rank"]:
        _rank_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6])
    elif sys.argv[1:2] == ["_epoch"]:
        _epoch_rank(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        what = sys.argv[1] if len(sys.argv) > 1 else "all"
        if what in ("solve", "all"):
            bench_solve()
        if what in ("allocate", "all"):
            bench_allocate()
        if what in ("epoch", "all"):
            bench_epoch()
