"""Tests for bidfcl.data: the simulator's ground truth and bias, the hybrid protocol, loaders, datasets."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch

import bidfcl
from bidfcl.data import (
    CRITEO_COLUMNS,
    SCENARIOS,
    DataError,
    RidgeTLearner,
    UpliftDataset,
    get_scenario,
    hybrid_split,
    load_criteo_uplift,
    load_table,
    make_marketing,
    make_scenario,
)
from conftest import needs_cuda

try:  # the loaders need pyarrow (an optional dependency); everything else runs without it
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover
    pa = pacsv = pq = None
needs_pyarrow = pytest.mark.skipif(pa is None, reason="needs pyarrow")

SMALL = dict(n_rct=4000, n_obs=40000, n_val=2000, n_test=20000)


def _naive_bias(ds: UpliftDataset) -> torch.Tensor:
    """|naive per-arm mean of observed revenue - true population mean of that option|, per option."""
    m = ds.n_options
    naive = torch.stack([ds.revenue[ds.treatment == j].double().mean() for j in range(m)])
    true = ds.r_true.double().mean(0)
    return (naive - true).abs()


def _naive_se(ds: UpliftDataset) -> torch.Tensor:
    m = ds.n_options
    return torch.stack(
        [ds.revenue[ds.treatment == j].double().std() / math.sqrt(int((ds.treatment == j).sum())) for j in range(m)]
    )


def _ipw(choice, ds: UpliftDataset):
    """IPW estimate of the per-capita revenue of a policy on randomised rows, with its standard error."""
    terms = (choice == ds.treatment).double() * ds.revenue.double() / ds.row_propensity().double()
    return terms.mean(), terms.std() / math.sqrt(len(ds))


# ---------------------------------------------------------------------------------------- simulator


def test_same_seed_same_data_different_seed_differs():
    a = make_marketing(**SMALL, seed=3)
    b = make_marketing(**SMALL, seed=3)
    c = make_marketing(**SMALL, seed=4)
    for split in ("rct", "obs", "val", "test"):
        ta, tb, tc = a.split(split).tensors(), b.split(split).tensors(), c.split(split).tensors()
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), (split, k)
        assert not torch.equal(ta["x"], tc["x"])
        assert not torch.equal(ta["revenue"], tc["revenue"])
    assert torch.equal(a.obs_propensity, b.obs_propensity)


def test_chunks_and_threads_do_not_change_the_sample():
    # more rows than one generation chunk, so several chunks run in parallel
    kw = dict(n_rct=0, n_obs=140_000, n_val=0, n_test=10, seed=11)
    a = make_marketing(**kw, num_threads=1)
    b = make_marketing(**kw, num_threads=2)
    for k, v in a.obs.tensors().items():
        assert torch.equal(v, b.obs.tensors()[k]), k
    # a split does not depend on the other splits' sizes
    c = make_marketing(n_rct=5, n_obs=140_000, n_val=7, n_test=10, seed=11)
    assert torch.equal(a.obs.x, c.obs.x) and torch.equal(a.test.revenue, c.test.revenue)


def test_world_seed_fixes_the_truth_function():
    a = make_marketing(n_rct=100, n_obs=0, n_val=0, n_test=0, seed=0, world_seed=5)
    b = make_marketing(n_rct=100, n_obs=0, n_val=0, n_test=0, seed=1, world_seed=5)
    # same world: the truth of a's users computed by b's world equals a's truth
    x = a.rct.x
    u = torch.zeros(len(x))
    assert torch.allclose(a.world.truth(x, u)[0], b.world.truth(x, u)[0])


@pytest.mark.parametrize("outcome", ["continuous", "binary"])
def test_truth_shapes_costs_and_diminishing_returns(outcome):
    d = make_marketing(n_rct=3000, n_obs=3000, n_val=10, n_test=3000, outcome=outcome, dtype=torch.float64)
    for split in ("rct", "obs", "val", "test"):
        ds = d.split(split)
        ds.validate()
        assert ds.x.dtype == torch.float64 and ds.treatment.dtype == torch.int64
        assert ds.r_true.shape == (len(ds), 5) and ds.c_true.shape == (len(ds), 5)
    t = d.test
    assert torch.all(t.c_true[:, 0] == 0)
    assert torch.all(t.c_true[:, 1:] > 0)
    assert torch.all(t.c_true.diff(dim=1) > 0), "cost grows with the option"
    gains = t.r_true.diff(dim=1)
    assert torch.all(gains >= 0), "uplift is non-negative"
    assert torch.all(gains.diff(dim=1) <= 1e-12), "diminishing returns in j"
    # heterogeneous: the uplift of the top option varies across users
    assert (t.r_true[:, -1] - t.r_true[:, 0]).std() > 0.2 * (t.r_true[:, -1] - t.r_true[:, 0]).mean()
    if outcome == "binary":
        for ds in (d.rct, d.obs):
            assert set(ds.revenue.unique().tolist()) <= {0.0, 1.0}
            assert set(ds.cost.unique().tolist()) <= {0.0, 1.0}
        assert t.r_true.min() >= 0 and t.r_true.max() <= 1 and t.c_true.max() <= 1
    else:
        assert torch.all(d.rct.cost >= 0) and torch.all(d.rct.cost[d.rct.treatment == 0] == 0)
    assert torch.equal(d.rct.propensity, torch.full((len(d.rct),), 0.2, dtype=torch.float64))
    assert d.obs.propensity is None and d.obs_propensity.shape == (len(d.obs),)
    assert torch.all((d.obs_propensity > 0) & (d.obs_propensity <= 1))


def test_obs_is_biased_and_bias_grows_with_the_knobs():
    d = make_marketing(n_rct=20_000, n_obs=100_000, n_val=0, n_test=0, seed=2)
    rct_bias, obs_bias = _naive_bias(d.rct), _naive_bias(d.obs)
    # RCT naive means are unbiased: within 4 standard errors; OBS far off
    assert torch.all(rct_bias < 4 * _naive_se(d.rct)), (rct_bias, _naive_se(d.rct))
    assert obs_bias.mean() > 10 * rct_bias.mean()
    # the bias grows with the hidden-confounding strength and with the selection strength
    conf = [
        _naive_bias(
            make_marketing(n_rct=0, n_obs=60_000, n_val=0, n_test=0, confounding=k, selection=0, seed=5).obs
        ).mean()
        for k in (0.0, 0.5, 1.5)
    ]
    sel = [
        _naive_bias(
            make_marketing(n_rct=0, n_obs=60_000, n_val=0, n_test=0, confounding=0, selection=k, seed=5).obs
        ).mean()
        for k in (0.0, 0.5, 1.5)
    ]
    assert conf[0] < conf[1] < conf[2], conf
    assert sel[0] < sel[1] < sel[2], sel
    assert conf[2] > 5 * conf[0] and sel[2] > 5 * sel[0]
    # without any knob the OBS log is a uniform RCT
    flat = make_marketing(n_rct=0, n_obs=60_000, n_val=0, n_test=0, confounding=0, selection=0, seed=5).obs
    assert torch.all(_naive_bias(flat) < 4 * _naive_se(flat))
    # the hidden confounder alone (no effect of u on outcomes) makes no bias
    nohid = make_marketing(
        n_rct=0, n_obs=60_000, n_val=0, n_test=0, confounding=1.5, selection=0, hidden_confounder=False, seed=5
    ).obs
    assert torch.all(_naive_bias(nohid) < 4 * _naive_se(nohid))


@pytest.mark.parametrize(
    "outcome,propensity", [("continuous", None), ("binary", None), ("continuous", [0.4, 0.3, 0.1, 0.1, 0.1])]
)
def test_ipw_on_rct_recovers_the_true_value(outcome, propensity):
    d = make_marketing(n_rct=60_000, n_obs=0, n_val=0, n_test=0, outcome=outcome, propensity=propensity, seed=7)
    ds = d.rct
    x = ds.x
    policies = [
        (x[:, 0] > 0).long() * 2 + (x[:, 1] > 0.5).long(),
        torch.full((len(ds),), 4, dtype=torch.long),
        d.oracle(0.3 * d.max_spend_per_capita("rct"), "rct").choice,
    ]
    for choice in policies:
        est, se = _ipw(choice, ds)
        true, _ = d.true_value(choice, "rct")
        assert abs(float(est - true)) < 3 * float(se), (float(est), float(true), float(se))


def test_oracle_beats_random_and_greedy_at_the_same_budget():
    d = make_marketing(n_rct=10, n_obs=0, n_val=0, n_test=30_000, seed=1)
    t = d.test
    n = len(t)
    budget = 0.3 * d.max_spend_per_capita()
    orc = d.oracle(budget)
    assert orc.cost <= budget + 1e-9
    assert torch.allclose(d.true_value(orc.choice)[0], orc.value)

    def fill(order, option):  # give `option` to users in `order` while the true budget allows
        spend = torch.cumsum(t.c_true[order, option].double(), 0)
        choice = torch.zeros(n, dtype=torch.long)
        choice[order[spend <= budget * n]] = option
        return choice

    g = torch.Generator().manual_seed(0)
    rand = fill(torch.randperm(n, generator=g), 2)
    greedy = fill(torch.argsort(t.r_true[:, -1], descending=True), d.n_options - 1)
    greedy_up = fill(torch.argsort(t.r_true[:, 2] - t.r_true[:, 0], descending=True), 2)
    for name, ch in (("random", rand), ("greedy-revenue", greedy), ("greedy-uplift", greedy_up)):
        v, c = d.true_value(ch)
        assert c <= budget + 1e-9
        assert orc.value > v, name
    # K budgets at once; value grows with budget
    many = d.oracle([0.1, 0.3, 0.6])
    assert many.choice.shape == (3, n) and torch.all(many.value.diff() > 0)
    v, c = d.true_value(many.choice)
    assert torch.allclose(v, many.value) and torch.allclose(c, many.cost)


def test_default_benchmark_is_learnable_but_not_trivial():
    d = make_marketing(n_rct=20_000, n_obs=0, n_val=0, n_test=20_000, seed=0)
    budget = 0.3 * d.max_spend_per_capita()
    base = float(d.true_value(torch.zeros(len(d.test), dtype=torch.long))[0])
    oracle = float(d.oracle(budget).value)
    r, c = RidgeTLearner().fit(d.rct).predict(d.test.x)
    learned = float(d.true_value(bidfcl.solve_mckp(r, c, budget * len(d.test)).choice)[0])
    # a linear two-stage model captures much of the oracle's gain, but not all of it
    assert base < learned < oracle
    assert 0.5 < (learned - base) / (oracle - base) < 0.995


def test_make_marketing_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_options"):
        make_marketing(n_options=1)
    with pytest.raises(ValueError, match="outcome"):
        make_marketing(outcome="count")
    with pytest.raises(ValueError, match="propensity"):
        make_marketing(propensity=[0.5, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        make_marketing(propensity=[0.3] * 5)
    with pytest.raises(ValueError, match="confounding"):
        make_marketing(confounding=-1)
    with pytest.raises(ValueError, match="n_rct"):
        make_marketing(n_rct=-5)
    d = make_marketing(n_rct=10, n_obs=10, n_val=10, n_test=10)
    with pytest.raises(DataError, match="int64"):
        d.true_value(torch.zeros(10), "test")
    with pytest.raises(DataError, match=r"\[0, 5\)"):
        d.true_value(torch.full((10,), 5), "test")
    with pytest.raises(DataError, match="shape"):
        d.true_value(torch.zeros(11, dtype=torch.long), "test")
    with pytest.raises(ValueError, match="split"):
        d.oracle(1.0, "train")


def _kurtosis(v: torch.Tensor) -> float:
    v = v.double()
    z = v - v.mean()
    return float((z**4).mean() / (z**2).mean() ** 2)


def test_revenue_tail_zero_keeps_the_lognormal_samples():
    # golden values of the log-normal model drawn before revenue_tail existed (float64, seed 11)
    d = make_marketing(n_rct=300, n_obs=300, n_val=10, n_test=10, seed=11, dtype=torch.float64)
    golden = {"rct": (409.7338602176884, 150.51450927031533, 612), "obs": (450.1191155545885, 157.05236810320264, 635)}
    for split, (rev, cost, treat) in golden.items():
        ds = d.split(split)
        assert float(ds.revenue.sum()) == pytest.approx(rev, rel=1e-9)
        assert float(ds.cost.sum()) == pytest.approx(cost, rel=1e-9)
        assert int(ds.treatment.sum()) == treat
    # and an explicit revenue_tail = 0 is the call without the knob, bit for bit, across chunks
    kw = dict(n_rct=3000, n_obs=140_000, n_val=100, n_test=100, seed=2)
    a, b = make_marketing(**kw), make_marketing(**kw, revenue_tail=0.0)
    for split in ("rct", "obs", "val", "test"):
        ta, tb = a.split(split).tensors(), b.split(split).tensors()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), (split, k)
    assert torch.equal(a.obs_propensity, b.obs_propensity)


def test_revenue_tail_is_mean_one_and_heavier():
    kw = dict(n_rct=60_000, n_obs=1000, n_val=0, n_test=0, seed=5, dtype=torch.float64)
    light, heavy = make_marketing(**kw), make_marketing(**kw, revenue_tail=0.35)
    # only the observed revenue changes: features, arms, costs and the truth are those of revenue_tail = 0
    for split in ("rct", "obs"):
        tl, th = light.split(split).tensors(), heavy.split(split).tensors()
        for k in tl:
            if k != "revenue":
                assert torch.equal(tl[k], th[k]), (split, k)
        assert not torch.equal(tl["revenue"], th["revenue"])
    ds = heavy.rct
    # E[revenue | x, t] = r_true: IPW of a few policies on the RCT rows matches the truth within 3 SE
    x = ds.x
    for choice in (
        torch.zeros(len(ds), dtype=torch.long),
        torch.full((len(ds),), 4, dtype=torch.long),
        (x[:, 0] > 0).long() * 3 + (x[:, 1] > 0).long(),
    ):
        est, se = _ipw(choice, ds)
        true, _ = heavy.true_value(choice, "rct")
        assert abs(float(est - true)) < 3 * float(se), (float(est), float(true), float(se))
    # the multiplicative noise revenue / r_true[t] has mean 1 and a much heavier tail
    r_t = ds.r_true.gather(1, ds.treatment.unsqueeze(1)).squeeze(1)
    ratio_h, ratio_l = ds.revenue / r_t, light.rct.revenue / r_t
    assert float(ratio_h.mean()) == pytest.approx(1.0, abs=4 * float(ratio_h.std()) / math.sqrt(len(ds)))
    assert _kurtosis(ratio_h) > 2 * _kurtosis(ratio_l)
    assert float(ratio_h.max()) > 3 * float(ratio_l.max())
    assert heavy.config["revenue_tail"] == 0.35


@pytest.mark.parametrize(
    "value,match",
    [
        (-0.1, r"revenue_tail to be a number in \[0, 0.5\)"),
        (0.5, r"got 0.5"),
        (float("nan"), "revenue_tail"),
        ("0.2", "revenue_tail"),
        (True, "revenue_tail"),
    ],
)
def test_revenue_tail_rejects_bad_values(value, match):
    with pytest.raises(ValueError, match=match):
        make_marketing(n_rct=10, n_obs=10, n_val=10, n_test=10, revenue_tail=value)


def test_revenue_tail_needs_a_continuous_outcome():
    with pytest.raises(ValueError, match="continuous"):
        make_marketing(n_rct=10, n_obs=10, n_val=10, n_test=10, outcome="binary", revenue_tail=0.2)


# ------------------------------------------------------------------------------------- scenarios

TINY = dict(n_rct=300, n_obs=600, n_val=200, n_test=400)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_scenario_builds_small(name):
    sc = get_scenario(name)
    assert sc.name == name and len(sc.description) > 80 and "seed" not in sc.kwargs
    d = make_scenario(name, seed=3, **TINY)
    assert (len(d.rct), len(d.obs), len(d.val), len(d.test)) == (300, 600, 200, 400)
    for k, v in sc.kwargs.items():  # the scenario's keywords reached make_marketing (sizes overridden)
        if k not in TINY:
            assert d.config[k] == v, (name, k)
    assert d.config["seed"] == 3
    assert d.n_options == sc.kwargs.get("n_options", 5)
    # the registry's keywords are make_marketing's: the scenario at its own sizes is the same world
    same = make_marketing(**{**sc.kwargs, **TINY}, seed=3)
    assert torch.equal(same.test.r_true, d.test.r_true) and torch.equal(same.obs.revenue, d.obs.revenue)


def test_scenarios_cover_the_issue_and_are_frozen():
    for name in ("default", "biased-small-rct", "strong-selection", "many-options", "binary", "heavy-tail"):
        assert name in SCENARIOS
    assert get_scenario("many-options").kwargs["n_options"] >= 8
    assert get_scenario("binary").kwargs["outcome"] == "binary"
    assert get_scenario("heavy-tail").kwargs["revenue_tail"] > 0
    assert dict(get_scenario("default").kwargs) == {"n_rct": 10000, "n_obs": 100000, "n_val": 10000, "n_test": 50000}
    sc = get_scenario("biased-small-rct")
    with pytest.raises(TypeError):
        sc.kwargs["n_rct"] = 5
    with pytest.raises(AttributeError):  # a frozen dataclass
        sc.name = "other"
    with pytest.raises(TypeError):
        SCENARIOS["mine"] = sc
    for s in SCENARIOS.values():  # measured (benchmarks/scenario_headroom.py)
        assert s.oracle_vs_tsm_rct is not None and s.oracle_vs_tsm_rct > 1.0 and len(s.measured_seeds) >= 2


def test_scenario_overrides_win():
    d = make_scenario(
        "biased-small-rct", seed=1, n_rct=100, n_obs=200, n_val=50, n_test=80, confounding=0.0, world_seed=4
    )
    assert d.config["confounding"] == 0.0 and d.config["world_seed"] == 4 and d.config["base_scale"] == 0.1
    assert len(d.rct) == 100


def test_unknown_scenario_lists_names_with_a_hint():
    with pytest.raises(
        ValueError,
        match=r"unknown scenario 'heavy-tails' \(did you mean 'heavy-tail'\?\); "
        r"known scenarios: default, biased-small-rct",
    ):
        make_scenario("heavy-tails")
    with pytest.raises(ValueError, match="known scenarios:"):
        get_scenario("zzz")
    with pytest.raises(ValueError, match="did you mean 'biased-small-rct'"):
        get_scenario("biased")


# -------------------------------------------------------------------------------- hybrid protocol


def test_hybrid_split_shares_and_biased_obs():
    d = make_marketing(n_rct=10, n_obs=0, n_val=0, n_test=100_000, seed=4, confounding=0, selection=0)
    src = d.test
    h = hybrid_split(src, seed=1)
    n = len(src)
    assert len(h.targeting) == int(0.05 * n) and h.policy_choice.shape == (int(0.5 * n),)
    assert (len(h.rct), len(h.val), len(h.test)) == (int(0.05 * n), int(0.1 * n), int(0.3 * n))
    blocks = torch.cat([h.indices[k] for k in ("targeting", "policy", "rct", "val", "test")])
    assert blocks.unique().numel() == blocks.numel() == n  # disjoint, covering everything
    assert torch.all(h.obs.treatment == h.policy_choice[h.policy_choice == src.treatment[h.indices["policy"]]])
    assert torch.equal(h.obs.x, src.x[h.indices["obs"]])
    # with 5 uniform arms a policy is matched by about 1/5 of its rows
    assert abs(h.match_rate - 0.2) < 0.02
    assert h.obs.propensity is None and h.rct.propensity is not None
    # the kept log is biased (selection on features), the RCT blocks are not
    obs_z = _naive_bias(h.obs) / _naive_se(h.obs)
    rct_z = _naive_bias(h.test) / _naive_se(h.test)
    assert torch.all(rct_z < 4), rct_z
    assert obs_z.max() > 10, obs_z
    # deterministic for a seed
    h2 = hybrid_split(src, seed=1)
    assert torch.equal(h2.indices["obs"], h.indices["obs"])


def test_hybrid_split_two_options_custom_policy_and_errors():
    d = make_marketing(
        n_options=2, n_rct=40_000, n_obs=0, n_val=0, n_test=0, outcome="binary", propensity=[0.15, 0.85], seed=2
    )
    src = d.rct._replace(propensity=None)
    h = hybrid_split(src)
    # criteo-like: about half the policy block is kept (about 25% of all rows)
    assert 0.15 < len(h.obs) / len(src) < 0.35
    # a given policy is used as is
    h = hybrid_split(src, policy=lambda x: (x[:, 0] > 0).long(), targeting_share=0.0)
    expect = (src.x[h.indices["policy"], 0] > 0).long()
    assert torch.equal(h.policy_choice, expect)
    with pytest.raises(ValueError, match="sum to at most 1"):
        hybrid_split(src, policy_share=0.9)
    with pytest.raises(DataError, match="int64"):
        hybrid_split(src, policy=lambda x: torch.zeros(len(x)))
    one_arm = src.subset(src.treatment == 1)
    one_arm = one_arm._replace(n_options=2)
    with pytest.raises(DataError, match="empty arm"):
        hybrid_split(one_arm)
    h = hybrid_split(src, budget_per_capita=0.0)  # nothing affordable beyond the cheapest option
    assert 0.05 < h.match_rate < 0.35


# ------------------------------------------------------------------------------------------ loaders


def _criteo_table(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    cols = {f"f{k}": rng.normal(10 * k, 1 + k, n) for k in range(12)}
    cols["treatment"] = (rng.random(n) < 0.85).astype(np.int64)
    cols["conversion"] = (rng.random(n) < 0.05).astype(np.int64)
    cols["visit"] = (rng.random(n) < 0.3).astype(np.int64)
    cols["exposure"] = (rng.random(n) < 0.2).astype(np.int64)
    return pa.table(cols)


def _write(table, path):
    if str(path).endswith(".parquet"):
        pq.write_table(table, path)
    elif str(path).endswith(".gz"):
        with pa.CompressedOutputStream(str(path), "gzip") as out:
            pacsv.write_csv(table, out)
    else:
        pacsv.write_csv(table, path)


@needs_pyarrow
@pytest.mark.parametrize("name", ["c.csv", "c.csv.gz", "c.parquet"])
def test_load_criteo_uplift_formats(tmp_path, name):
    table = _criteo_table(seed=1)
    assert tuple(table.column_names) == CRITEO_COLUMNS
    path = tmp_path / name
    _write(table, path)
    ds = load_criteo_uplift(path)
    n = table.num_rows
    assert len(ds) == n and ds.n_options == 2 and ds.x.shape == (n, 12) and ds.x.dtype == torch.float32
    raw = np.stack([table.column(f"f{k}").to_numpy() for k in range(12)], 1)
    scaled = (raw - raw.min(0)) / (raw.max(0) - raw.min(0))
    assert np.allclose(ds.x.numpy(), scaled, atol=1e-5)
    assert ds.x.min() >= 0 and ds.x.max() <= 1
    assert torch.equal(ds.treatment, torch.from_numpy(table.column("treatment").to_numpy().copy()))
    assert torch.equal(ds.revenue, torch.from_numpy(table.column("conversion").to_numpy().copy()).float())
    assert torch.equal(ds.cost, torch.from_numpy(table.column("visit").to_numpy().copy()).float())
    assert ds.propensity is None
    raw_ds = load_criteo_uplift(path, scale=False, dtype=torch.float64)
    assert np.allclose(raw_ds.x.numpy(), raw)


@needs_pyarrow
def test_load_csv_row_hint_too_small_grows(tmp_path):
    table = _criteo_table(n=2000)
    path = tmp_path / "c.csv"
    _write(table, path)
    assert len(load_criteo_uplift(path, n_rows=10)) == 2000


@needs_pyarrow
def test_load_table_mapping_and_propensity(tmp_path):
    rng = np.random.default_rng(3)
    n = 500
    table = pa.table(
        {
            "a": rng.normal(size=n),
            "b": rng.integers(0, 5, n),
            "arm": rng.integers(0, 3, n),
            "gmv": rng.exponential(size=n),
            "spend": rng.exponential(size=n),
            "p": np.full(n, 1 / 3),
            "ignored": ["s"] * n,
        }
    )
    for name in ("t.parquet", "t.csv"):
        path = tmp_path / name
        _write(table, path)
        ds = load_table(
            path, features=["b", "a"], treatment="arm", revenue="gmv", cost="spend", propensity="p", dtype=torch.float64
        )
        assert ds.n_options == 3 and torch.equal(ds.treatment, torch.from_numpy(table.column("arm").to_numpy().copy()))
        assert np.allclose(ds.x[:, 0].numpy(), table.column("b").to_numpy())
        assert np.allclose(ds.x[:, 1].numpy(), table.column("a").to_numpy())
        assert np.allclose(ds.propensity.numpy(), 1 / 3)
        assert load_table(path, ["a"], "arm", "gmv", "spend", n_options=7).n_options == 7


def _replace_column(table, name, values):
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, pa.array(values))


@needs_pyarrow
def test_loader_errors(tmp_path):
    base = _criteo_table(n=300, seed=2)
    cases = {
        "missing": (base.drop(["exposure"]), "c.csv", r"\['exposure'\]"),
        "missing_feature": (base.drop(["f3"]), "c.parquet", r"\['f3'\]"),
        "nan": (
            _replace_column(base, "f2", np.where(np.arange(300) == 17, np.nan, 1.0)),
            "c.parquet",
            "finite.*f2.*row 17",
        ),
        "null": (
            _replace_column(base, "visit", pa.array([None] + [1] * 299, type=pa.int64())),
            "c.parquet",
            "missing values.*visit",
        ),
        "non_numeric_parquet": (_replace_column(base, "f0", ["x"] * 300), "c.parquet", "numeric.*f0"),
        "treatment_range": (
            _replace_column(base, "treatment", np.where(np.arange(300) == 5, 2, 1)),
            "c.csv",
            r"treatment in \[0, 2\).*row 5",
        ),
        "empty_arm": (_replace_column(base, "treatment", np.ones(300, dtype=np.int64)), "c.csv", "empty arm"),
        "negative_cost": (
            _replace_column(base, "visit", np.where(np.arange(300) == 9, -1, 0)),
            "c.csv",
            "non-negative cost.*row 9",
        ),
        "fractional_treatment": (
            _replace_column(base, "treatment", np.full(300, 0.5)),
            "c.parquet",
            "integer treatment",
        ),
    }
    for case, (table, name, pattern) in cases.items():
        path = tmp_path / f"{case}_{name}"
        _write(table, path)
        with pytest.raises(DataError, match=pattern):
            load_criteo_uplift(path)
    # non-numeric text inside a CSV, after the first rows
    path = tmp_path / "text.csv"
    _write(base, path)
    lines = path.read_text().splitlines()
    lines[200] = "abc" + lines[200][lines[200].index(",") :]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="numeric"):
        load_criteo_uplift(path)
    # an empty cell in a CSV
    lines[200] = "," + lines[200][lines[200].index(",") + 1 :]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="missing|numeric"):
        load_criteo_uplift(path)
    with pytest.raises(FileNotFoundError, match="Criteo AI Lab"):
        load_criteo_uplift(tmp_path / "absent.csv.gz")
    (tmp_path / "c.bin").write_bytes(b"a,t,r,c\n1,0,1,1\n")
    with pytest.raises(ValueError, match="format"):
        load_table(tmp_path / "c.bin", ["a"], "t", "r", "c")
    assert len(load_table(tmp_path / "c.bin", ["a"], "t", "r", "c", format="csv")) == 1
    gz = tmp_path / "bad.csv.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("f0,treatment\n1,0\n")
    with pytest.raises(DataError, match="expected columns"):
        load_criteo_uplift(gz)


# ------------------------------------------------------------------------------------------ dataset


def test_dataset_validation_errors():
    n = 6
    good = dict(
        x=torch.zeros(n, 2), treatment=torch.tensor([0, 1, 2, 0, 1, 2]), revenue=torch.ones(n), cost=torch.ones(n)
    )
    UpliftDataset(**good).validate(require_all_arms=True)
    with pytest.raises(DataError, match="finite x.*row 3"):
        x = torch.zeros(n, 2)
        x[3, 1] = float("nan")
        UpliftDataset(**{**good, "x": x}).validate()
    with pytest.raises(DataError, match=r"treatment in \[0, 3\)"):
        UpliftDataset(**{**good, "treatment": torch.tensor([0, 1, 2, 0, 1, 3])}, n_options=3).validate()
    with pytest.raises(DataError, match="treatment in"):
        UpliftDataset(**{**good, "treatment": torch.tensor([0, 1, 2, 0, 1, -1])}).validate()
    with pytest.raises(DataError, match="non-negative cost"):
        UpliftDataset(**{**good, "cost": -torch.ones(n)}).validate()
    UpliftDataset(**{**good, "cost": -torch.ones(n)}).validate(nonnegative_cost=False)
    with pytest.raises(DataError, match="empty arm"):
        UpliftDataset(**{**good, "treatment": torch.tensor([0, 0, 2, 0, 2, 2])}).validate(require_all_arms=True)
    with pytest.raises(DataError, match="int64"):
        UpliftDataset(**{**good, "treatment": torch.zeros(n, dtype=torch.int32)}, n_options=3).validate()
    with pytest.raises(DataError, match="shape"):
        UpliftDataset(**{**good, "revenue": torch.ones(n, 1)}).validate()
    with pytest.raises(DataError, match="propensity in"):
        UpliftDataset(**good, propensity=torch.zeros(n)).validate()


def test_batches_subset_to_and_memmap_round_trip(tmp_path):
    d = make_marketing(n_rct=1000, n_obs=10, n_val=10, n_test=10, seed=9)
    ds = d.rct
    ds.save(tmp_path / "rct")
    mm = UpliftDataset.open_memmap(tmp_path / "rct", validate=True)
    assert mm.n_options == ds.n_options and len(mm) == len(ds)
    for k, v in ds.tensors().items():
        assert torch.equal(mm.tensors()[k], v), k
    # copy-on-write mapping: writing through the tensor never reaches the file
    mm.x[0, 0] = 123.0
    assert torch.equal(UpliftDataset.open_memmap(tmp_path / "rct").x, ds.x)
    mm = UpliftDataset.open_memmap(tmp_path / "rct")
    # streaming batches cover every row once, in order or shuffled (deterministic for a generator)
    batches = list(mm.batches(300))
    assert [len(b) for b in batches] == [300, 300, 300, 100] and mm.num_batches(300) == 4
    assert torch.equal(torch.cat([b.x for b in batches]), ds.x)
    assert len(list(mm.batches(300, drop_last=True))) == 3
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    s1 = [b.revenue for b in mm.batches(256, shuffle=True, generator=g1)]
    s2 = [b.revenue for b in ds.batches(256, shuffle=True, generator=g2)]
    assert all(torch.equal(a, b) for a, b in zip(s1, s2))
    assert torch.equal(torch.cat(s1).sort().values, ds.revenue.sort().values)
    assert not torch.equal(torch.cat(s1), ds.revenue)
    b0 = next(mm.batches(64, shuffle=True, generator=torch.Generator().manual_seed(1)))
    assert b0.r_true is not None and b0.r_true.shape == (64, 5)
    # subset / to / materialize
    sub = ds.subset(torch.tensor([5, 1, 7]))
    assert torch.equal(sub.treatment, ds.treatment[[5, 1, 7]])
    assert ds.subset(ds.treatment == 0).arm_counts()[1:].sum() == 0
    assert (
        ds.to(dtype=torch.float64).x.dtype == torch.float64
        and ds.to(dtype=torch.float64).treatment.dtype == torch.int64
    )
    assert torch.equal(mm.materialize().cost, ds.cost)
    both = UpliftDataset.concat([ds.subset(slice(0, 10)), ds.subset(slice(10, 20))])
    assert torch.equal(both.x, ds.x[:20])
    with pytest.raises(ValueError, match="batch_size"):
        next(ds.batches(0))
    with pytest.raises(FileNotFoundError):
        UpliftDataset.open_memmap(tmp_path / "nowhere")


@needs_cuda
def test_dataset_to_cuda_batches():
    d = make_marketing(n_rct=100, n_obs=0, n_val=0, n_test=10)
    batches = list(d.rct.batches(32, device="cuda"))
    assert batches[0].x.is_cuda and torch.equal(torch.cat([b.x for b in batches]).cpu(), d.rct.x)
    assert d.test.to("cuda").r_true.is_cuda


def test_loaders_say_when_pyarrow_is_missing(tmp_path, monkeypatch):
    import sys

    for mod in ("pyarrow", "pyarrow.csv", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, mod, None)
    path = tmp_path / "t.csv"
    path.write_text("a,t,r,c\n1,0,1,1\n")
    with pytest.raises(ImportError, match="pip install pyarrow"):
        load_table(path, ["a"], "t", "r", "c")
    with pytest.raises(ImportError, match="pip install pyarrow"):
        load_criteo_uplift(path)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_load_table_rows_reads_a_shard_equal_to_the_slice(tmp_path, fmt):
    """``rows=(lo, hi)`` (a data-parallel rank's shard) gives exactly rows lo..hi-1 of the whole
    read, for Parquet with many row groups and for CSV; errors name rows by their file number."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from bidfcl.data import count_rows, load_table, make_marketing, write_table

    ds = make_marketing(n_rct=1000, n_obs=10, n_val=10, n_test=10, seed=2).rct
    path = str(tmp_path / f"rows.{fmt}")
    write_table(ds, path)
    if fmt == "parquet":  # small row groups: the shard spans several, starts and ends inside one
        pq.write_table(pq.read_table(path), path, row_group_size=97)
        assert pq.ParquetFile(path).metadata.num_row_groups > 5
    cols = dict(
        features=[f"f{j}" for j in range(ds.n_features)],
        treatment="treatment",
        revenue="revenue",
        cost="cost",
        propensity="propensity",
    )
    assert count_rows(path) == 1000
    whole = load_table(path, **cols)
    for lo, hi in ((0, 500), (500, 1000), (123, 456), (0, 0), (999, 1000), (0, 1000)):
        part = load_table(path, **cols, rows=(lo, hi))
        assert len(part) == hi - lo
        for name in ("x", "treatment", "revenue", "cost", "propensity"):
            assert torch.equal(getattr(part, name), getattr(whole, name)[lo:hi]), (lo, hi, name)
    columns = {c: [float(i) for i in range(1000)] for c in cols["features"] + ["revenue"]}
    columns.update(treatment=[i % 3 for i in range(1000)], cost=[1.0] * 600 + [-1.0] + [1.0] * 399)
    bad = pa.Table.from_pydict(columns)
    if fmt == "parquet":
        pq.write_table(bad, path, row_group_size=97)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(bad, path)
    cols.pop("propensity")
    with pytest.raises(DataError, match="row 600"):
        load_table(path, **cols, rows=(550, 700))
    assert len(load_table(path, **cols, rows=(0, 600))) == 600  # the bad row is not in [0, 600)
    with pytest.raises(ValueError, match="rows must be a pair"):
        load_table(path, **cols, rows=(5, 2))
