"""Where one Bi-DFCL epoch goes: wall time per part of the bridge step and of the target steps.

    PYTHONPATH=python python benchmarks/profile_epoch.py [--set train.KEY=VALUE ...]

Runs the biased-small-RCT sizes of ``bench_epoch.py`` (2 epochs, one thread) with timers wrapped
around the trainer's and :mod:`bidfcl.implicit`'s parts and prints seconds per epoch of each, and
the mean CG iterations and share of negative-curvature stops per bridge step. Parts nest (the bridge
step holds the hypergradient, which holds the CG solve, which holds the products). A diagnostic:
it patches private functions, so it follows the code it was written for.
"""

from __future__ import annotations

import collections
import statistics
import time

from _common import bidfcl_trainer, parse_args

from bidfcl import implicit
from bidfcl.train import bilevel

SECONDS: dict = collections.defaultdict(float)
CALLS: collections.Counter = collections.Counter()


def timed(owner, name: str, label: str) -> None:
    if not hasattr(owner, name):
        return
    fn = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SECONDS[label] += time.perf_counter() - start
            CALLS[label] += 1

    setattr(owner, name, wrapper)


def main() -> None:
    args = parse_args(__doc__, lambda ap: ap.add_argument("--epochs", type=int, default=2))
    for owner, name, label in [
        (bilevel.BidfclTrainer, "bilevel_step", "bilevel step (target step + bridge step)"),
        (bilevel.BidfclTrainer, "bridge_step", "  bridge step"),
        (implicit, "_upper_gradients", "    upper loss and its gradient (RCT forward, solve, backward)"),
        (bilevel, "decision_loss", "      of which the decision loss forward (solve + ppl)"),
        (implicit, "_lower_gradients", "    lower-loss gradient with a graph (hessian / auto)"),
        (implicit, "_cg_from_grads", "    CG on the exact Hessian (hessian / auto)"),
        (implicit._GaussNewton, "__init__", "    Gauss-Newton set-up (forward, J'u graph)"),
        (implicit, "cg", "    CG on Gauss-Newton"),
        (implicit._GaussNewton, "matvec", "      of which Gauss-Newton products"),
        (implicit, "_mixed_term", "    mixed term by double backward (hessian / auto)"),
        (implicit._GaussNewton, "mixed", "    mixed term from J v (gauss-newton)"),
    ]:
        timed(owner, name, label)
    trainer = bidfcl_trainer(args.epochs, args.train)
    steps = []
    bridge_step = trainer.bridge_step

    def recording(*a):
        out = bridge_step(*a)
        steps.append(out)
        return out

    trainer.bridge_step = recording
    result = trainer.fit()
    main_phase = [k for k in result["epoch_seconds"] if k != "teacher" and not k.endswith("warm")][-1]
    print(f"epoch {result['epoch_seconds'][main_phase]:.3f} s (last of {args.epochs}); seconds per epoch:")
    order = [label for label in SECONDS]
    for label in order:
        print(f"  {label:66s} {SECONDS[label] / args.epochs:7.3f}  ({CALLS[label] // args.epochs} calls)")
    if steps:
        print(
            f"bridge steps per epoch {len(steps) // args.epochs}; CG iterations "
            f"{statistics.mean(s.get('cg_iters', 0) for s in steps):.1f}; negative-curvature stops "
            f"{statistics.mean(s.get('cg_negcurv', 0) for s in steps):.3f}"
        )


if __name__ == "__main__":
    main()
