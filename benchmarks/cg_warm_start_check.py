"""How many warm-started CG iterations a bridge step needs: the trainer's hypergradient next to a
converged one.

    PYTHONPATH=python python benchmarks/cg_warm_start_check.py [--cg-iters 3] [--every 5] [--set train.KEY=VALUE ...]

One Bi-DFCL epoch on the biased-small-RCT sizes of ``bench_epoch.py`` (one thread). Every
``--every``-th bridge step the same hypergradient is also solved cold to ``tol = 1e-8`` (at most
150 iterations); the script prints the cosine and norm ratio of the trainer's bridge gradient
against it, and the mean relative residual of the trainer's solves. The training itself follows
the trainer's own (warm-started) solves only.
"""

from __future__ import annotations

import torch
from _common import bidfcl_trainer, parse_args


def _options(ap) -> None:
    ap.add_argument("--cg-iters", type=int, default=3)
    ap.add_argument("--every", type=int, default=5)


def main() -> None:
    args = parse_args(__doc__, _options)
    trainer = bidfcl_trainer(1, dict({"cg_iters": args.cg_iters}, **args.train))
    own = trainer.implicit_hypergradient
    errors, rows = [], []

    def checked(model, batch, index, rct):
        res = own(model, batch, index, rct)
        errors.append(res.state.error)
        if (len(errors) - 1) % args.every == 0:
            t = trainer.cfg.train
            kept = t.cg_iters, t.cg_tol, trainer.cg_warm
            t.cg_iters, t.cg_tol, trainer.cg_warm = 150, 1e-8, None
            try:
                ref = own(model, batch, index, rct)
            finally:
                t.cg_iters, t.cg_tol, trainer.cg_warm = kept
            a = torch.cat([g.reshape(-1) for g in res.grads])
            b = torch.cat([g.reshape(-1) for g in ref.grads])
            rows.append(
                (
                    len(errors),
                    float(a @ b / (a.norm() * b.norm())),
                    float(a.norm() / b.norm()),
                    ref.state.iter_num,
                    ref.state.error,
                )
            )
        return res

    trainer.implicit_hypergradient = checked
    trainer.fit()
    print(f"cg_iters {args.cg_iters}: mean relative residual of the trainer's solves {sum(errors) / len(errors):.3g}")
    for step, cos, ratio, iters, err in rows:
        print(
            f"  bridge step {step:3d}: cosine {cos:.4f}, norm ratio {ratio:.3f} (reference: {iters} iterations, "
            f"residual {err:.1e})"
        )


if __name__ == "__main__":
    main()
