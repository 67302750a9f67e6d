"""One rank of the data-parallel training tests in test_parallel_train.py: joins a gloo group on
loopback, trains each run of a JSON list on its shard of the (generated) data, and writes one
record per run (the deployed model's parameters, the result, or the error) to ``<out>/rank<r>.pt``.

Usage: python tests/_train_worker.py RANK WORLD PORT RUNS_JSON OUT

Each run is ``{"config": {...sections...}, "resume": bool, "crash_after_saves": k, "on_rank": {r:
{"train.device": ...}}}``: ``on_rank`` overrides config keys on one rank (bad input on one rank
only), ``crash_after_saves`` stops every rank right after the k-th checkpoint write (an
interrupted run to resume).
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import torch
import torch.distributed as dist


class Crash(Exception):
    pass


def run_one(rank: int, spec: dict) -> dict:
    from bidfcl.train import config_from_dict, load_run_data, make_trainer
    from bidfcl.train.loop import Trainer

    sections = json.loads(json.dumps(spec["config"]))
    for key, value in spec.get("on_rank", {}).get(str(rank), {}).items():
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = value
    cfg = config_from_dict(sections)
    saves, limit = [0], spec.get("crash_after_saves")
    original = Trainer.save_checkpoint

    def save_then_maybe_crash(self):
        original(self)
        saves[0] += 1
        if limit is not None and saves[0] >= limit:
            raise Crash(f"stopped after checkpoint write {saves[0]}")

    Trainer.save_checkpoint = save_then_maybe_crash
    try:
        tr = make_trainer(cfg, load_run_data(cfg.data), out_dir=cfg.output.dir)
        res = tr.fit(resume=bool(spec.get("resume")))
        return {
            "ok": True,
            "state": {k: v.detach().clone() for k, v in tr.deployed.state_dict().items()},
            "evaluation": res["evaluation"],
            "history": res["history"],
            "world_size": res.get("world_size", 1),
        }
    except Crash as exc:
        return {"ok": False, "crashed": True, "error": str(exc)}
    except Exception as exc:  # the test reads the message of every rank
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    finally:
        Trainer.save_checkpoint = original


def main() -> None:
    rank, world, port, runs, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    records = [run_one(rank, spec) for spec in json.loads(runs)]
    torch.save(records, os.path.join(out, f"rank{rank}.pt"))
    # Leave together: a rank that tears its gloo pairs down while its peer is still in
    # destroy_process_group can abort that peer ("terminate called without an active exception",
    # seen once in CI on rank 1 of the bad-input test), so every rank first waits for the others.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
