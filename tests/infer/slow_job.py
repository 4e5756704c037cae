"""A recaption job with the slow fake captioner, run as a subprocess by the fault-injection tests.

    python slow_job.py IMAGES OUT --rows-per-shard 4 --sleep 0.02 [--num-shards N --shard-index i]

Under torchrun, RANK / WORLD_SIZE split the shards as they do for `mllm recaption`.
Prints the summary as one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from fake_captioner import FakeCaptioner

from mllm.config import GenerationSettings
from mllm.infer.engine import EngineConfig
from mllm.infer.recaption import RecaptionConfig, recaption
from mllm.infer.shards import WorkerSlot
from mllm.infer.sources import FolderSource


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("images")
    parser.add_argument("out")
    parser.add_argument("--rows-per-shard", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.02, help="seconds per image per task")
    parser.add_argument("--num-shards", type=int, default=1)
    parser.add_argument("--shard-index", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=1)
    args = parser.parse_args()
    slot = WorkerSlot.from_env(args.shard_index, args.num_shards)
    config = RecaptionConfig(args.out, rows_per_shard=args.rows_per_shard, slot=slot, num_shards=args.num_shards,
                             engine=EngineConfig(batch_size=2, num_workers=args.num_workers), progress=False)
    settings = {"short": GenerationSettings(max_new_tokens=16), "detailed": GenerationSettings(max_new_tokens=64)}
    summary = recaption(FakeCaptioner(sleep=args.sleep), FolderSource(args.images), config, settings)
    print(json.dumps({"slot": [slot.index, slot.count], **dataclasses.asdict(summary)}), flush=True)


if __name__ == "__main__":
    main()
