"""Multi-head MLPs for revenue and cost (METHOD.md sections 4-5), S-learner shape.

One network sees the features ``x`` and predicts, for every option j, the revenue ``r_hat[i, j]``
and the cost ``c_hat[i, j]``: a shared trunk of fully connected layers, then one linear layer with
``2M`` outputs (M revenue heads, M cost heads), then an output activation:

    h = act(W_L ... act(W_1 ((x - mean) / std)))       shared trunk, sizes ``hidden``
    [r_hat | c_hat] = out(W_o h + b_o)                  out in {linear, sigmoid, softplus}

``sigmoid`` suits binary labels (conversion, redemption), ``softplus`` non-negative amounts,
``linear`` anything. The paper's marketing networks are 128-64-32-2M (the default here).

The same shape serves the three networks of Bi-DFCL: teacher, target (both with the label's
activation) and bridge (``output="linear"``, gates ``sigmoid(G(x))`` applied by the trainer).
Feature standardisation (``mean``, ``std``) lives inside the model as buffers, so a saved model
scores raw features from a file directly.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from . import _validate

__all__ = ["MultiHeadMLP", "OUTPUTS", "ACTIVATIONS", "model_from_config"]

OUTPUTS = ("linear", "sigmoid", "softplus")
ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


class MultiHeadMLP(nn.Module):
    """Shared trunk + ``2M`` heads: ``forward(x) -> (r_hat [N, M], c_hat [N, M])``.

    Args:
        n_features: F, input width.
        n_options: M >= 1 options (heads per quantity).
        hidden: trunk widths (default ``(128, 64, 32)``, the paper's marketing network).
        activation: trunk nonlinearity, one of ``ACTIVATIONS``.
        output: output activation of both quantities, one of ``OUTPUTS``.
        cost_output: output activation of the cost heads if different from ``output``.
        dropout: dropout probability after each trunk layer (0 = none).
        free_options: options whose cost is known to be zero (e.g. option 0, "no incentive"): their
            cost heads output exactly 0, so the model's cheapest policy always costs nothing and a
            decision loss cannot make it overspend (default: none).
    """

    def __init__(
        self,
        n_features: int,
        n_options: int,
        hidden: Sequence[int] = (128, 64, 32),
        activation: str = "relu",
        output: str = "linear",
        cost_output: Optional[str] = None,
        dropout: float = 0.0,
        free_options: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
            raise ValueError(f"bidfcl.models: expected n_features >= 1, got {n_features!r}")
        if isinstance(n_options, bool) or not isinstance(n_options, int) or n_options < 1:
            raise ValueError(f"bidfcl.models: expected n_options >= 1, got {n_options!r}")
        hidden = [int(h) for h in hidden]
        if any(h < 1 for h in hidden):
            raise ValueError(f"bidfcl.models: expected positive hidden sizes, got {hidden}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"bidfcl.models: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        cost_output = output if cost_output is None else cost_output
        for name, v in (("output", output), ("cost_output", cost_output)):
            if v not in OUTPUTS:
                raise ValueError(f"bidfcl.models: {name} must be one of {OUTPUTS}, got {v!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"bidfcl.models: expected dropout in [0, 1), got {dropout!r}")
        free = sorted({int(j) for j in (free_options or [])})
        if any(isinstance(j, bool) or not 0 <= j < n_options for j in free):
            raise ValueError(f"bidfcl.models: expected free_options in [0, {n_options}), got {list(free_options)}")
        self.free_options = free
        self.n_features, self.n_options = n_features, n_options
        self.hidden, self.activation = hidden, activation
        self.output, self.cost_output, self.dropout = output, cost_output, float(dropout)
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.Linear(width, 2 * n_options)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        cost_mask = torch.ones(n_options)
        cost_mask[free] = 0.0
        self.register_buffer("cost_mask", cost_mask, persistent=False)  # rebuilt from free_options

    def config(self) -> dict:
        """Constructor arguments (saved with checkpoints; :func:`model_from_config` rebuilds)."""
        return dict(
            n_features=self.n_features,
            n_options=self.n_options,
            hidden=list(self.hidden),
            activation=self.activation,
            output=self.output,
            cost_output=self.cost_output,
            dropout=self.dropout,
            free_options=list(self.free_options),
        )

    def _check_x(self, x) -> torch.Tensor:
        _validate.tensor(x, "x")
        if x.dtype == torch.bool or x.is_complex():
            raise _validate.InputTypeError(f"bidfcl.models: expected real features x, got dtype {x.dtype}")
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise _validate.InputError(
                f"bidfcl.models: expected x of shape [N, {self.n_features}], got {list(x.shape)}"
            )
        return x

    @torch.no_grad()
    def fit_scaler(self, x: torch.Tensor, parallel=None) -> "MultiHeadMLP":
        """Set the standardisation to the column means / standard deviations of ``x`` (constant
        columns keep std 1). ``x`` must be finite (a NaN would make every prediction NaN).

        ``parallel`` (an active :class:`bidfcl.train.parallel.Parallel`): ``x`` is this rank's
        shard and the moments are those of every rank's rows (two all-reduced passes: the mean,
        then the squared deviations from it)."""
        self._check_x(x)
        _validate.finite(x, "x")
        x64 = x.to(torch.float64)
        if parallel is not None and parallel.active:
            n = float(parallel.sum(torch.tensor([float(x.shape[0])], dtype=torch.float64))[0])
            mean = parallel.sum(x64.sum(0)) / n
            dev = parallel.sum(((x64 - mean) ** 2).sum(0))
            std = (dev / (n - 1)).sqrt() if n > 1 else torch.ones(self.n_features, dtype=torch.float64, device=x.device)
            std = torch.where(std > 1e-12, std, torch.ones_like(std))
            self.mean.copy_(mean.to(self.mean.dtype))
            self.std.copy_(std.to(self.std.dtype))
            return self
        std = x64.std(0) if x.shape[0] > 1 else torch.ones(self.n_features, dtype=torch.float64)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        self.mean.copy_(x64.mean(0).to(self.mean.dtype))
        self.std.copy_(std.to(self.std.dtype))
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation outputs ``[N, 2M]`` (revenue heads first)."""
        self._check_x(x)
        z = (x.to(self.mean.dtype) - self.mean) / self.std
        return self.heads(self.trunk(z))

    @staticmethod
    def _activate(z: torch.Tensor, kind: str) -> torch.Tensor:
        if kind == "sigmoid":
            return torch.sigmoid(z)
        if kind == "softplus":
            return nn.functional.softplus(z)
        return z

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.logits(x)
        m = self.n_options
        c = self._activate(z[:, m:], self.cost_output)
        if self.free_options:
            c = c * self.cost_mask
        return self._activate(z[:, :m], self.output), c

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` in evaluation mode over row blocks, without gradients."""
        self._check_x(x)
        _validate.integer(batch_size, "batch_size", lo=1)
        was_training = self.training
        self.eval()
        try:
            rs, cs = [], []
            for start in range(0, x.shape[0], batch_size):
                r, c = self(x[start : start + batch_size])
                rs.append(r)
                cs.append(c)
            if not rs:
                empty = torch.zeros(0, self.n_options, dtype=self.mean.dtype)
                return empty, empty.clone()
            return torch.cat(rs), torch.cat(cs)
        finally:
            self.train(was_training)


def model_from_config(cfg: dict) -> MultiHeadMLP:
    """Rebuild a :class:`MultiHeadMLP` from :meth:`MultiHeadMLP.config`."""
    return MultiHeadMLP(**cfg)
