"""bidfcl.distributed on 2 and 3 gloo processes (loopback), the sharded selection on chunks in one
process, the two building-block ops, and out-of-core allocation (bidfcl.streaming)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

import bidfcl
from bidfcl import _reference, distributed
from bidfcl._sharded import LocalComm, Segment, bp_keys, select_cuts
from conftest import DTYPES

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.join(os.path.dirname(HERE), "python")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, suite: str, tmp_path, timeout: float = 120.0) -> list[list[dict]]:
    """Run tests/_dist_worker.py on ``world`` local processes; per rank, its case records."""
    port = str(_free_port())
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "_dist_worker.py"), str(r), str(world), port, suite, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0].decode(errors="replace"))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"{suite} on {world} ranks did not finish in {timeout} s (a collective hung?)")
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} exited with {p.returncode}:\n{outs[r][-3000:]}"
    records = []
    for r in range(world):
        with open(tmp_path / f"rank{r}.jsonl") as fh:
            records.append([json.loads(line) for line in fh])
    return records


def _assert_all_ok(records):
    names = [c["case"] for c in records[0]]
    for r, rec in enumerate(records):
        assert [c["case"] for c in rec] == names, f"rank {r} ran other cases"
        bad = {c["case"]: c["problems"] for c in rec if c["problems"]}
        assert not bad, f"rank {r}: {bad}"
    return names


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_solves_match_single_process(world, tmp_path):
    """lam bit for bit, choices of each shard, totals: ties, zero costs, budgets below the cheapest
    policy and at frontier points, K budgets, uneven and empty shards, RCT with every propensity
    kind, and tiny bins / candidate caps so that every round type (incl. ties) runs."""
    records = _launch(world, "main" if world == 2 else "lite", tmp_path)
    names = _assert_all_ok(records)
    assert len(names) >= (27 if world == 2 else 18)
    small = [c for c in records[0] if c["case"].startswith("small_mckp")]
    assert sum(c["stats"]["requests"]["tie"] for c in small) > 0, "the tie path was not exercised"
    # interior budgets take the bracketed path (the hulls of a few rows only) and still match exactly
    bracketed = [c["stats"].get("bracketed_rows") for c in records[0] if c["case"].startswith("bracket_")]
    if world == 2:
        assert bracketed and sum(b is not None for b in bracketed) >= len(bracketed) // 2, bracketed
        assert all(b is None or b < 400 for b in bracketed), bracketed
    big = [c for c in records[0] if c["case"] == "mckp_even_torch.float32"][0]["stats"]
    # communication is bins and candidates, not rows: K budgets x rounds x (3 x 4096 float64) + gathers
    assert big["bytes"] < 2_000_000 and big["ranks"] == world


def test_distributed_bad_input_raises_on_every_rank(tmp_path):
    records = _launch(2, "bad", tmp_path)
    names = _assert_all_ok(records)
    assert "still_in_step" in names and "empty_arm_globally" in names


def test_not_initialised_falls_back_to_single_process():
    v, c = torch.rand(30, 4), torch.rand(30, 4)
    a, b = distributed.solve_mckp(v, c, 3.0), bidfcl.solve_mckp(v, c, 3.0)
    assert torch.equal(a.lam, b.lam) and torch.equal(a.choice, b.choice)
    t = torch.randint(0, 4, (30,))
    obs = torch.rand(30)
    a, b = distributed.solve_mckp_rct(v, c, t, obs, 0.2), bidfcl.solve_mckp_rct(v, c, t, obs, 0.2)
    assert torch.equal(a.lam, b.lam) and torch.equal(a.choice, b.choice) and torch.equal(a.spend, b.spend)


# --------------------------------------------------------------------------------------------------
# the selection on several segments in one process (the streaming path), against solve_mckp
# --------------------------------------------------------------------------------------------------


def _segments_of(values, costs, sizes):
    segs, base, start = [], 0.0, 0
    for q, n in enumerate(sizes):
        if n:
            bp, ids, delta, b = bidfcl._ops.ops.mckp_events(
                values[start : start + n], costs[start : start + n], None, None
            )
            segs.append(Segment(q, bp_keys(bp), ids, delta))
            base += float(b)
        start += n
    return segs, base


@pytest.mark.parametrize("nbins,cap", [(4096, 4096), (4, 3), (2, 1)])
def test_selection_over_chunks_matches_solve_mckp(nbins, cap):
    g = torch.Generator().manual_seed(11)
    n, m = 400, 4
    values = torch.randint(0, 8, (n, m), generator=g).float() * 0.5
    costs = torch.randint(0, 4, (n, m), generator=g).float()
    values[200:300], costs[200:300] = values[0:100], costs[0:100]  # duplicated rows: ties across chunks
    sizes = [37, 0, 150, 13, 200]
    fr = bidfcl.budget_frontier(values, costs)
    budgets = torch.cat([fr.spend[:: max(1, fr.spend.numel() // 9)], torch.tensor([0.0, 1e9])]).double()
    segs, base = _segments_of(values, costs, sizes)
    keys = torch.cat([s.key for s in segs])
    slack = budgets * (1 + bidfcl.solver.BUDGET_SLACK)
    cuts = select_cuts(
        lambda: segs,
        LocalComm(),
        slack.tolist(),
        base,
        int(keys.min()),
        int(keys.max()),
        monotone=True,
        nbins=nbins,
        cap=cap,
    )
    ref = bidfcl.solve_mckp(values, costs, budgets)
    lam = torch.stack([c.lam(values.dtype) for c in cuts])
    assert torch.equal(lam, ref.lam)
    start = 0
    for q, size in enumerate(sizes):
        if size:
            loc = [c.local(q, m, values.dtype) for c in cuts]
            choice = bidfcl._ops.ops.apply_mckp_cut(
                values[start : start + size],
                costs[start : start + size],
                torch.stack([x[0] for x in loc]),
                torch.tensor([x[1] for x in loc]),
                torch.tensor([x[2] for x in loc]),
            )[0]
            assert torch.equal(choice, ref.choice[:, start : start + size]), f"chunk {q}"
        start += size


# --------------------------------------------------------------------------------------------------
# the building-block ops against their twins
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_events_and_apply_cut_match_twins(dtype):
    g = torch.Generator().manual_seed(3)
    v = (torch.randint(-3, 10, (300, 5), generator=g) * 0.5).to(dtype)
    c = (torch.randint(0, 5, (300, 5), generator=g) * 0.5).to(dtype)
    t = torch.randint(0, 5, (300,), generator=g)
    w = torch.rand(300, generator=g, dtype=torch.float64)
    for args in ((None, None), (t, w)):
        got, ref = bidfcl._ops.ops.mckp_events(v, c, *args), _reference.mckp_events(v, c, *args)
        for x, y in zip(got[:3], ref[:3]):
            assert torch.equal(x, y)
        assert torch.isclose(got[3], ref[3], rtol=1e-12)
    bp = ref[0]
    lam = torch.cat([bp[:3], torch.tensor([float("inf"), 0.0], dtype=dtype)])
    ind = torch.tensor([10, 150, 299, 0, 2**63 - 1])
    step = torch.tensor([1, 2, 3, 0, 0])
    got, ref = bidfcl._ops.ops.apply_mckp_cut(v, c, lam, ind, step), _reference.apply_mckp_cut(v, c, lam, ind, step)
    assert torch.equal(got[0], ref[0])
    for x, y in zip(got[1:], ref[1:]):
        assert torch.allclose(x[:3], y[:3], rtol=1e-12)


def test_apply_cut_rejects_bad_cuts():
    v, c = torch.rand(4, 3), torch.rand(4, 3)
    with pytest.raises((RuntimeError, ValueError), match="int64"):
        bidfcl._ops.ops.apply_mckp_cut(v, c, torch.zeros(1), torch.zeros(1), torch.zeros(1, dtype=torch.long))
    with pytest.raises((RuntimeError, ValueError), match="both treatment and weight"):
        bidfcl._ops.ops.mckp_events(v, c, torch.zeros(4, dtype=torch.long), None)


# --------------------------------------------------------------------------------------------------
# out-of-core allocate: chunks equal the in-memory command
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model():
    from bidfcl.models import MultiHeadMLP

    torch.manual_seed(0)
    return MultiHeadMLP(3, 4, hidden=(16,))


def _users(tmp_path, n, kind):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    x[n // 2 : n // 2 + 40] = x[:40]  # duplicated users: ties across chunks
    table = pa.table(
        {"x0": x[:, 0].numpy(), "x1": x[:, 1].numpy(), "x2": x[:, 2].numpy(), "user": [f"u{i}" for i in range(n)]}
    )
    path = tmp_path / f"users.{kind}"
    if kind == "parquet":
        pq.write_table(table, str(path), row_group_size=97)
    else:
        pacsv.write_csv(table, str(path), write_options=pacsv.WriteOptions(batch_size=50))
    return path, x


@pytest.mark.parametrize("kind", ["parquet", "csv"])
@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_streaming_allocate_equals_in_memory(tmp_path, small_model, kind, chunk, monkeypatch):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from bidfcl import streaming
    from bidfcl.streaming import allocate_file

    # a small predict block so that 500 users make many chunks (chunks hold whole blocks)
    monkeypatch.setattr(streaming, "PREDICT_BLOCK", 8)
    n = 500
    path, x = _users(tmp_path, n, kind)
    r_hat, c_hat = small_model.predict(x.to(small_model.mean.dtype), batch_size=8)
    c_hat = c_hat.clamp_min(0.0)
    cheapest = float(bidfcl.budget_frontier(r_hat, c_hat).spend[0])
    for per_capita in (0.0, cheapest / n * 0.5, cheapest / n + 0.05, cheapest / n + 0.3, 1e6):
        out = tmp_path / f"plan.{kind}"
        res = allocate_file(
            small_model, str(path), str(out), ["x0", "x1", "x2"], budget=per_capita, id_column="user", chunk_rows=chunk
        )
        ref = bidfcl.solve_mckp(r_hat, c_hat, per_capita * n)
        plan = pq.read_table(str(out)) if kind == "parquet" else pacsv.read_csv(str(out))
        assert plan.column_names == ["user", "option", "expected_revenue", "expected_spend"]
        assert plan.column("user").to_pylist() == [f"u{i}" for i in range(n)]
        assert plan.column("option").to_pylist() == ref.choice.tolist()
        rows = torch.arange(n)
        assert plan.column("expected_revenue").to_pylist() == r_hat[rows, ref.choice].double().tolist()
        assert res["lam"] == float(ref.lam) or (res["lam"] == float("inf") == float(ref.lam))
        assert res["spend"] == pytest.approx(float(ref.spend), rel=1e-12)
        assert res["value"] == pytest.approx(float(ref.value), rel=1e-12, abs=1e-9)
        block_rows = -(-chunk // 8) * 8
        assert res["chunk_rows"] == block_rows and res["chunks"] == -(-n // block_rows)
    assert not [p for p in os.listdir(tmp_path) if p.startswith("bidfcl-spill-")], "the spill was not removed"


def test_streaming_cli_matches_in_memory_cli(tmp_path, small_model):
    import pyarrow.parquet as pq

    from bidfcl.cli import main
    from bidfcl.train import save_model

    path, _ = _users(tmp_path, 300, "parquet")
    model_path = tmp_path / "model.pt"
    save_model(small_model, str(model_path))
    common = [
        "allocate",
        "--model",
        str(model_path),
        "--input",
        str(path),
        "--budget",
        "0.4",
        "--features",
        "x0,x1,x2",
        "--id-column",
        "user",
    ]
    assert main(common + ["--chunk-rows", "0", "--output", str(tmp_path / "a.parquet")]) == 0
    assert main(common + ["--chunk-rows", "16", "--output", str(tmp_path / "b.parquet")]) == 0
    a, b = pq.read_table(str(tmp_path / "a.parquet")), pq.read_table(str(tmp_path / "b.parquet"))
    assert a.to_pydict() == b.to_pydict()


def test_allocate_under_torchrun_writes_parts_equal_to_the_whole(tmp_path, small_model):
    """2 ranks on a Parquet file: each writes its row range; the parts concatenated are the plan."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from bidfcl.streaming import PREDICT_BLOCK
    from bidfcl.train import save_model

    n = PREDICT_BLOCK + 3000  # rank 0: one predict block, rank 1: the rest
    g = torch.Generator().manual_seed(9)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    x[-500:] = x[:500]  # ties across the two ranks
    path = tmp_path / "users.parquet"
    pq.write_table(pa.table({f"x{j}": x[:, j].numpy() for j in range(3)}), str(path), row_group_size=10_000)
    model_path = tmp_path / "model.pt"
    save_model(small_model, str(model_path))
    r_hat, c_hat = small_model.predict(x.to(small_model.mean.dtype))
    c_hat = c_hat.clamp_min(0.0)
    per_capita = float(bidfcl.budget_frontier(r_hat, c_hat).spend[0]) / n + 0.02
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "bidfcl",
        "allocate",
        "--model",
        str(model_path),
        "--input",
        str(path),
        "--budget",
        repr(per_capita),
        "--features",
        "x0,x1,x2",
        "--output",
        str(tmp_path / "plan.parquet"),
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    parts = [pq.read_table(str(tmp_path / f"plan.rank{r}-of-2.parquet")) for r in range(2)]
    assert [t.num_rows for t in parts] == [PREDICT_BLOCK, 3000]
    ref = bidfcl.solve_mckp(r_hat, c_hat, per_capita * n)
    options = parts[0].column("option").to_pylist() + parts[1].column("option").to_pylist()
    assert options == ref.choice.tolist()
    assert parts[1].column("row").to_pylist()[0] == PREDICT_BLOCK
