"""Two-stage method (TSM), S-learner: fit revenue and cost of every option to the logged labels.

    L = mean_i (r_hat[i, t_i] - revenue_i)^2 + (c_hat[i, t_i] - cost_i)^2

on RCT rows, OBS rows, or both pooled (``tsm.data``); the decision is made afterwards by solving
the allocation on the predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import UpliftDataset
from .config import ConfigError, require
from .datasets import factual_rows
from .loop import Phase, Trainer, factual_loss
from .parallel import RowShard
from .registry import register_method

__all__ = ["TsmTrainer", "TsmConfig", "tsm_rows"]

#: the rows TSM may fit
TSM_DATA = ("rct", "obs", "pooled")


@dataclass
class TsmConfig:
    """``[tsm]``: read by the two-stage method only."""

    data: str = "rct"  #: rows TSM fits: rct | obs | pooled


def check_tsm_section(ts: TsmConfig, cfg) -> None:
    """The checks of ``[tsm]``."""
    require(ts.data in TSM_DATA, f"expected tsm.data in {list(TSM_DATA)}, got {ts.data!r}")


def tsm_shard(data, which: str):
    """The global rows of :func:`tsm_rows` this rank holds (None when the data is not sharded)."""
    if data.shards is None:
        return None
    if which in ("rct", "obs"):
        return data.row_shard(which)
    return RowShard.concat([data.row_shard("rct"), data.row_shard("obs")])


def tsm_rows(data, which: str) -> UpliftDataset:
    """The factual rows TSM trains on: ``rct``, ``obs`` or ``pooled`` (RCT + OBS)."""
    if which == "rct":
        return factual_rows(data.rct)
    if data.obs is None:
        raise ConfigError(f"bidfcl: tsm.data = {which!r} needs OBS rows (data.obs)")
    if which == "obs":
        return factual_rows(data.obs)
    return UpliftDataset.concat([factual_rows(data.rct), factual_rows(data.obs)])


@register_method(
    "tsm",
    doc="two-stage method: fit the logged outcomes, then solve",
    config=TsmConfig,
    check=check_tsm_section,
    presets={
        "tsm-rct": {"train.method": "tsm", "tsm.data": "rct"},
        "tsm-obs": {"train.method": "tsm", "tsm.data": "obs"},
        "tsm-pooled": {"train.method": "tsm", "tsm.data": "pooled"},
    },
)
class TsmTrainer(Trainer):
    def build(self) -> None:
        self.model = self.new_model()
        self.opt = self.adam(self.model)
        self.ddp = self.parallel.wrap(self.model)
        self.rows = tsm_rows(self.data, self.cfg.tsm.data)

    def step(self, batch: UpliftDataset, index: torch.Tensor) -> dict:
        self.opt.zero_grad(set_to_none=True)
        loss = factual_loss(*self.ddp(batch.x), batch)
        self.scaled(loss).backward()
        self.opt.step()
        return {"mse": loss.detach()}

    def phases(self) -> list[Phase]:
        return [
            Phase(
                f"tsm-{self.cfg.tsm.data}",
                self.cfg.train.epochs,
                self.rows,
                self.step,
                select="model",
                shard=tsm_shard(self.data, self.cfg.tsm.data),
            )
        ]

    @torch.no_grad()
    def validation_loss(self, name: str) -> float:
        model = self.modules()[name]
        return self.split_mean(factual_loss(*model.predict(self.val_ds.x), self.val_ds), self.val_ds, self.val_shard)
