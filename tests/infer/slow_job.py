"""A recaption job with the slow fake captioner, run as a subprocess by the fault-injection tests.

    python slow_job.py IMAGES OUT --rows-per-shard 4 --sleep 0.02 [--num-shards N --shard-index i]
    python slow_job.py IMAGES OUT --ray-workers 2      # on a local Ray of 3 CPUs, no task retries

Under torchrun, RANK / WORLD_SIZE split the shards as they do for `mllm recaption`.
Prints the summary as one JSON line; on Ray, exit code 1 when a shard failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys

from fake_captioner import FakeCaptioner

from mllm.config import GenerationSettings
from mllm.infer.engine import EngineConfig
from mllm.infer.recaption import RecaptionConfig, recaption
from mllm.infer.shards import WorkerSlot
from mllm.infer.sources import FolderSource


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("images")
    parser.add_argument("out")
    parser.add_argument("--rows-per-shard", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.02, help="seconds per image per task")
    parser.add_argument("--num-shards", type=int, default=1)
    parser.add_argument("--shard-index", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--ray-workers", type=int, default=0, help="captioner actors on a local Ray (0: no Ray)")
    args = parser.parse_args()
    slot = WorkerSlot.from_env(args.shard_index, args.num_shards)
    config = RecaptionConfig(args.out, rows_per_shard=args.rows_per_shard, slot=slot, num_shards=args.num_shards,
                             engine=EngineConfig(batch_size=2, num_workers=args.num_workers), progress=False)
    settings = {"short": GenerationSettings(max_new_tokens=16), "detailed": GenerationSettings(max_new_tokens=64)}
    if args.ray_workers:
        from mllm.infer.ray_runner import RayConfig, recaption_on_ray

        ray = RayConfig(config, workers=args.ray_workers, task_retries=0,
                        init_args={"num_cpus": args.ray_workers + 1, "log_to_driver": False})
        summary = recaption_on_ray(functools.partial(FakeCaptioner, sleep=args.sleep), FolderSource(args.images), ray,
                                   settings, FakeCaptioner.model_id, FakeCaptioner.model_revision)
        code = 1 if summary.failed else 0
    else:
        summary, code = recaption(FakeCaptioner(sleep=args.sleep), FolderSource(args.images), config, settings), 0
    print(json.dumps({"slot": [slot.index, slot.count], **dataclasses.asdict(summary)}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
