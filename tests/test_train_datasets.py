"""bidfcl.train.datasets: run data from the synthetic generator or from files."""

import pytest

from bidfcl.train import ConfigError, config_from_dict, load_config, load_run_data, make_trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_make_marketing_errors_become_config_errors():
    cfg = config_from_dict({"data": {"n_features": 2}})
    with pytest.raises(ConfigError, match="n_features"):
        load_run_data(cfg.data)


def test_files_source_reads_tables(tmp_path, data):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.csv as pacsv

    def write(ds, name):
        cols = {f"f{j}": ds.x[:, j].numpy() for j in range(ds.n_features)}
        cols.update(t=ds.treatment.numpy(), rev=ds.revenue.numpy(), cst=ds.cost.numpy())
        pacsv.write_csv(pa.table(cols), str(tmp_path / name))

    write(data.rct, "rct.csv")
    write(data.obs, "obs.csv")
    (tmp_path / "c.toml").write_text(
        '[data]\nsource = "files"\nrct = "rct.csv"\nobs = "obs.csv"\n'
        f"features = [{', '.join(repr(f'f{j}') for j in range(data.n_features))}]\n"
        'treatment = "t"\nrevenue = "rev"\ncost = "cst"\n'
        '[train]\nepochs = 1\n[tsm]\ndata = "pooled"\n[model]\nhidden = [8]\n[output]\nprogress = "none"\n'
    )
    cfg = load_config(tmp_path / "c.toml")
    d = load_run_data(cfg.data)
    assert len(d.rct) == 600 and len(d.obs) == 1200 and d.marketing is None and d.val is None
    res = make_trainer(cfg, d).fit()
    assert res["split"] == "rct" and "true_value" not in res["evaluation"]


def test_free_options_are_detected_from_logged_costs(data):
    from bidfcl.train.datasets import free_options

    assert free_options(data.rct, data.obs) == [0]
    paid = data.rct._replace(cost=data.rct.cost + 1.0)
    assert free_options(paid) == []
    assert free_options(None) == []
