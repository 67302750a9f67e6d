"""What the Bi-DFCL diagnostic scripts (cg_warm_start_check.py, profile_epoch.py) share.

Both run Bi-DFCL on the biased-small-RCT sizes of ``bench_epoch.py`` on one thread, with train
settings from ``--set train.KEY=VALUE`` options. The scripts run as ``python benchmarks/NAME.py``,
so this folder is ``sys.path[0]`` and ``from _common import ...`` finds this file.
"""

from __future__ import annotations

import argparse
import ast

import torch
from bench_epoch import DATA

from bidfcl.train import config_from_dict, load_run_data, make_trainer
from bidfcl.train.config import upgrade_run_config


def parse_args(doc: str, add_options=None) -> argparse.Namespace:
    """The script's options (``add_options(parser)`` adds its own) plus ``--set``; sets one thread.

    The description is the first line of ``doc``; ``--set train.KEY=VALUE`` may repeat.
    """
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    if add_options is not None:
        add_options(ap)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="train.KEY=VALUE",
        help="a train setting (VALUE: a Python literal, or true/false); may repeat",
    )
    args = ap.parse_args()
    args.train = train_settings(args.set, ap)
    torch.set_num_threads(1)
    return args


def train_settings(items: list[str], ap: argparse.ArgumentParser) -> dict:
    """``["train.KEY=VALUE", ...]`` as ``{KEY: value}``: VALUE is a Python literal or true/false.

    A malformed item exits through ``ap.error`` (status 2, one line naming the item).
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or section != "train" or not dot or not name:
            ap.error(f"--set expects train.KEY=VALUE, got {item!r}")
        if value in ("true", "false"):
            out[name] = value == "true"
            continue
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            ap.error(f"--set {item!r}: VALUE must be a Python literal (number, string, list) or true/false")
    return out


def bidfcl_trainer(epochs: int, train: dict):
    """A Bi-DFCL trainer on ``bench_epoch.DATA`` (teacher 2 epochs, warm start 1, batches of 1024,
    last epoch selected, no progress output); ``train`` overrides any setting of the flat layout
    before the per-method sections (``k``, ``cg_iters``, ...; mapped by ``upgrade_run_config``)."""
    cfg = config_from_dict(
        upgrade_run_config(
            {
                "data": DATA,
                "train": dict(
                    method="bidfcl", teacher_epochs=2, warm_start_epochs=1, epochs=epochs, batch_size=1024, **train
                ),
                "eval": {"select": "last"},
                "output": {"progress": "none"},
            }
        )
    )
    return make_trainer(cfg, load_run_data(cfg.data))
