"""Seconds per training step of `qformer_pretrain` against `align`, same model, data and batch.

    python scripts/bench_qformer_pretrain.py --run runs/quickstart-qformer-pretrain --batch-size 8

`--run` is a quickstart folder (its `tower/` and `scenes/`); the config is
configs/quickstart_qformer_pretrain.yaml. Each stage trains `--steps` steps from scratch in a
temporary folder; the first step (warm-up) is left out of the median.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

from mllm.config import load_config
from mllm.train.trainer import train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart_qformer_pretrain.yaml"


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self.started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a quickstart output folder (tower/, scenes/)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    run = Path(args.run)
    for stage in ("qformer_pretrain", "align"):
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as out:
            cfg = load_config(CONFIG, [f"model.vision.name_or_path={run / 'tower'}",
                                       f"data.train={run / 'scenes' / 'train.jsonl'}", f"train.stage={stage}",
                                       f"train.output_dir={out}", f"train.max_steps={args.steps}",
                                       f"train.batch_size={args.batch_size}", "train.validation_steps=0",
                                       "train.save_steps=100000", "train.logging_steps=100000"])
            train(cfg, callbacks=[timer])
        steady = timer.seconds[1:] or timer.seconds
        print(f"{stage}: {statistics.median(steady):.3f} s/step (median of {len(steady)}, batch {args.batch_size}, "
              f"packing {cfg.train.packing})", flush=True)


if __name__ == "__main__":
    main()
