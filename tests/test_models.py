"""bidfcl.models: the multi-head MLP (shapes, activations, scaler, config round trip, errors)."""

import pytest
import torch

from bidfcl.models import MultiHeadMLP, model_from_config


def test_shapes_and_default_sizes():
    torch.manual_seed(0)
    m = MultiHeadMLP(7, 4)
    r, c = m(torch.randn(5, 7))
    assert r.shape == (5, 4) and c.shape == (5, 4)
    widths = [l.out_features for l in m.trunk if isinstance(l, torch.nn.Linear)] + [m.heads.out_features]
    assert widths == [128, 64, 32, 8]  # METHOD.md section 5: 128-64-32-2M


@pytest.mark.parametrize(
    "output,check",
    [
        ("sigmoid", lambda t: bool(((t > 0) & (t < 1)).all())),
        ("softplus", lambda t: bool((t >= 0).all())),
        ("linear", lambda t: bool((t < 0).any())),
    ],
)
def test_output_activations(output, check):
    torch.manual_seed(1)
    m = MultiHeadMLP(3, 2, hidden=(8,), output=output)
    with torch.no_grad():
        m.heads.bias.fill_(-3.0)
    r, c = m(torch.randn(50, 3))
    assert check(r) and check(c)


def test_cost_output_separately():
    m = MultiHeadMLP(3, 2, hidden=(4,), output="linear", cost_output="softplus")
    with torch.no_grad():
        m.heads.bias.fill_(-5.0)
    r, c = m(torch.randn(10, 3))
    assert bool((r < 0).all()) and bool((c > 0).all())


def test_scaler_standardises_inside_the_model():
    x = torch.randn(200, 3, dtype=torch.float64) * torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64) + 5.0
    m = MultiHeadMLP(3, 2, hidden=(4,)).double().fit_scaler(x)
    z = (x - m.mean) / m.std
    assert torch.allclose(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(z.std(0), torch.ones(3, dtype=torch.float64), atol=1e-10)
    const = torch.ones(10, 3)
    m2 = MultiHeadMLP(3, 2, hidden=(4,)).fit_scaler(const)
    assert torch.equal(m2.std, torch.ones(3))


def test_config_round_trip_and_predict():
    torch.manual_seed(2)
    m = MultiHeadMLP(4, 3, hidden=(16, 8), activation="tanh", output="softplus", dropout=0.1)
    m.fit_scaler(torch.randn(30, 4))
    m2 = model_from_config(m.config())
    m2.load_state_dict(m.state_dict())
    x = torch.randn(9, 4)
    m.train()
    r1, c1 = m.predict(x, batch_size=4)
    assert m.training  # predict restores the mode
    r2, c2 = m2.predict(x)
    assert torch.equal(r1, r2) and torch.equal(c1, c2)
    assert not r1.requires_grad


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(n_features=0, n_options=2), "n_features"),
        (dict(n_features=3, n_options=0), "n_options"),
        (dict(n_features=3, n_options=2, hidden=(0,)), "hidden"),
        (dict(n_features=3, n_options=2, activation="nope"), "activation"),
        (dict(n_features=3, n_options=2, output="exp"), "output"),
        (dict(n_features=3, n_options=2, dropout=1.0), "dropout"),
        (dict(n_features=3, n_options=2, free_options=[2]), "free_options"),
        (dict(n_features=3, n_options=2, free_options=[-1]), "free_options"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadMLP(**kwargs)


def test_wrong_input_width():
    m = MultiHeadMLP(3, 2, hidden=(4,))
    with pytest.raises(ValueError, match=r"expected x of shape \[N, 3\]"):
        m(torch.randn(2, 4))


def test_free_options_cost_exactly_zero_and_round_trip():
    torch.manual_seed(0)
    m = MultiHeadMLP(3, 4, hidden=(5,), cost_output="softplus", free_options=[0, 2]).to(torch.float64)
    x = torch.randn(16, 3, dtype=torch.float64)
    r, c = m(x)
    assert torch.all(c[:, [0, 2]] == 0) and torch.all(c[:, [1, 3]] > 0)
    c.sum().backward()  # no gradient reaches a free option's head
    assert torch.all(m.heads.weight.grad[4 + 0] == 0) and torch.any(m.heads.weight.grad[4 + 1] != 0)
    m2 = model_from_config(m.config()).to(torch.float64)
    m2.load_state_dict(m.state_dict())
    assert m2.free_options == [0, 2] and torch.equal(m2(x)[1], c)
