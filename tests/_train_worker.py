"""One rank of the data-parallel training tests in test_parallel_train.py: joins a gloo group on
loopback, trains the run a JSON config describes on its shard of the (generated) data, and writes
the deployed model's parameters and the result to ``<out>/rank<r>.pt``.

Usage: python tests/_train_worker.py RANK WORLD PORT CONFIG_JSON OUT [resume]
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import torch
import torch.distributed as dist


def main() -> None:
    rank, world, port, config, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    resume = len(sys.argv) > 6 and sys.argv[6] == "resume"
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    record = {"rank": rank}
    try:
        from bidfcl.train import config_from_dict, load_run_data, make_trainer

        cfg = config_from_dict(json.loads(config))
        tr = make_trainer(cfg, load_run_data(cfg.data), out_dir=cfg.output.dir)
        res = tr.fit(resume=resume)
        record.update(ok=True, state={k: v.detach().clone() for k, v in tr.deployed.state_dict().items()},
                      evaluation=res["evaluation"], history=res["history"], world_size=res.get("world_size", 1))
    except Exception as exc:  # the test reads the message of every rank
        record.update(ok=False, error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc())
    torch.save(record, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
