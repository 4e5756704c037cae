"""Training throughput side by side: tokens/s, MFU and peak memory per stage and batching.

    python scripts/bench_train.py                       # quickstart-sized model, on this machine
    python scripts/bench_train.py --size 1.5b --batch-size 16   # a Qwen2-1.5B-sized random LLM (GPU)
    python scripts/bench_train.py --stages lora --batching packed --connectors mlp2x_gelu pixel_shuffle \
        --scale 3 --image-size 126 --patch-size 14   # 81 patches: 81 tokens against 9

Stages: `align` (connector only), LoRA `sft`, QLoRA `sft` (where bitsandbytes runs) and `full`.
Batching, on a dataset whose captions spread from about 20 to 300 tokens: plain padding (random
order), length grouping (`train.group_by_length`) and packing (`train.packing`). Each stage runs
in its own process, so that its peak memory is its own. `--connectors` repeats each run per
connector (`--scale` for pixel shuffle; `--image-size` / `--patch-size` change the tower's grid). MFU = model FLOPs / the matmul peak
measured in the same run at the same dtype. Model FLOPs per token: 4·N for a frozen LLM (forward
plus the backward pass to its input; LoRA's own work is left out) or 6·N when it trains, N the LLM's
weights without the input embedding; the LM head only where a label is predicted; plus the tower's
forward (2·N_tower per patch). Attention's L² term is left out. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

from bench_sizes import SIZES

from mllm.config import ConnectorName

STAGES = {"align": ["train.stage=align"], "lora": ["model.tuning.recipe=lora"],
          "qlora": ["model.tuning.recipe=qlora"], "full": ["model.tuning.recipe=full"]}
BATCHING = {"padded": ["train.group_by_length=false", "train.packing=false"],
            "grouped": ["train.group_by_length=true", "train.packing=false"],
            "packed": ["train.group_by_length=false", "train.packing=true"]}
FILLER = "a small red square sits just left of a large blue circle near the top of a plain grey background".split()


def spread_dataset(folder: Path, n: int, image_size: int, seed: int = 0) -> Path:
    """`n` records with random images and captions of 15 to 220 words (about 20 to 300 tokens)."""
    from PIL import Image
    import numpy as np

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        pixels = np.random.default_rng(i).integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        words = [FILLER[(i + j) % len(FILLER)] for j in range(rng.randint(15, 220))]
        rows.append({"key": str(i), "image": f"{i}.png", "caption": " ".join(words) + ".", "short_caption": "x"})
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tower_fields(args) -> dict:
    """The size's `model.vision` fields with `--image-size` / `--patch-size` applied."""
    vision = json.loads(json.dumps(SIZES[args.size]["vision"]))
    side = args.image_size or vision["config"]["image_size"]
    vision["config"].update(image_size=side, patch_size=args.patch_size or vision["config"]["patch_size"])
    vision["image_processor"]["size"] = {"height": side, "width": side}
    return vision


def one_run(args) -> dict:
    """Time one stage with one batching in this process; returns the figures."""
    import resource

    import torch
    from mllm.config import load_config
    from mllm.data.dataset import CaptionDataset
    from mllm.data.packing import PackedCollator
    from mllm.data.records import read_records
    from mllm.model.build import build_captioner
    from mllm.model.recipes import unwrap
    from mllm.precision import matmul_seconds, resolve_dtype, resolve_precision
    from mllm.train.objectives import build_objective
    from mllm.train.trainer import CaptionTrainer, training_arguments, training_device
    from transformers import TrainerCallback

    size, work, batching = SIZES[args.size], Path(args.work), args.batching[0]
    overrides = [f"model.vision={json.dumps(tower_fields(args))}", "model.vision.name_or_path=null",
                 f"model.connector.type={args.connector}", f"model.connector.scale={args.scale}",
                 f"data.train={work / 'data' / 'train.jsonl'}", "data.tasks=[detailed]", "data.max_length=512",
                 f"train.output_dir={work / args.stage / batching / args.connector}", f"train.batch_size={args.batch_size}",
                 f"train.max_steps={args.steps + args.warmup}", "train.save_steps=100000", "train.logging_steps=100000",
                 "train.validation_steps=0", "train.lr=1e-5",
                 *STAGES[args.stage], *BATCHING[batching]]
    overrides += [f"model.llm.{key}={json.dumps(value)}" for key, value in size["llm"].items()]
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml", overrides)
    device = training_device(cfg)
    precision = resolve_precision(cfg.train.precision, device)
    dtype = resolve_dtype(cfg.model.llm.dtype, device, precision=precision).dtype
    built = build_captioner(cfg, work / "model", dtype=dtype)
    records, skipped = read_records(cfg.data.train)
    dataset = CaptionDataset(records, built.processor, cfg.data.tasks, skipped)
    collate = PackedCollator() if cfg.train.packing else built.processor.collate
    trainer = CaptionTrainer(args=training_arguments(cfg, precision), train_dataset=dataset, data_collator=collate,
                             built=built, objective=build_objective(built, dataset, cfg.train.stage), run_config=cfg,
                             lengths=dataset.lengths)
    counts = {"tokens": 0, "slots": 0, "supervised": 0, "seconds": 0.0, "steps": 0}
    step = trainer.training_step

    def counted_step(model, inputs, num_items_in_batch=None):
        if counts["steps"] >= args.warmup:
            real = inputs["attention_mask"].sum() if "attention_mask" in inputs else inputs["input_ids"].numel()
            counts["tokens"] += int(real)
            counts["slots"] += inputs["input_ids"].numel()
            counts["supervised"] += int((inputs["labels"] != -100).sum())
        return step(model, inputs, num_items_in_batch)

    class StepTimer(TrainerCallback):
        """Forward, backward and optimizer step of every step after the warm-up ones."""

        def on_step_begin(self, *_, **__):
            if device == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            if device == "cuda":
                torch.cuda.synchronize()
            counts["steps"] += 1
            if counts["steps"] > args.warmup:
                counts["seconds"] += time.perf_counter() - self.start

    trainer.training_step = counted_step
    trainer.add_callback(StepTimer())
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    llava = unwrap(built.model)
    text = llava.model.language_model
    n_llm = sum(p.numel() for p in text.parameters()) - text.get_input_embeddings().weight.numel()
    n_tower = sum(p.numel() for p in llava.model.vision_tower.parameters())
    head = llava.lm_head.weight.numel()
    factor = 6 if cfg.model.tuning.recipe == "full" and args.stage != "align" else 4
    patches = (llava.config.vision_config.image_size // llava.config.vision_config.patch_size) ** 2
    images = args.batch_size * args.steps
    seconds = counts["seconds"]
    flops = factor * n_llm * counts["tokens"] + factor * head * counts["supervised"] + 2 * n_tower * patches * images
    peak = 2 * 2048 ** 3 / matmul_seconds(dtype, 2048, repeats=10, device=device)  # FLOP/s
    memory = (torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)
    return {"stage": args.stage, "batching": batching, "connector": args.connector,
            "image_tokens": llava.config.image_seq_length, "dtype": str(dtype).replace("torch.", ""),
            "tokens_per_s": counts["tokens"] / seconds, "samples_per_s": images / seconds,
            "s_per_step": seconds / args.steps, "mfu": flops / seconds / peak, "peak_tflops": peak / 1e12,
            "peak_memory_gib": memory, "padding_share": 1 - counts["tokens"] / counts["slots"], "wall_s": wall,
            "steps": args.steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="quickstart")
    parser.add_argument("--stages", nargs="+", choices=sorted(STAGES), default=["align", "lora", "qlora", "full"])
    parser.add_argument("--batching", nargs="+", choices=sorted(BATCHING), default=["padded", "grouped", "packed"])
    parser.add_argument("--connectors", nargs="+", choices=list(typing.get_args(ConnectorName)),
                        default=["mlp2x_gelu"])
    parser.add_argument("--scale", type=int, default=2, help="pixel_shuffle: patches merged per side")
    parser.add_argument("--image-size", type=int, help="the tower's input side in pixels (default: the size's)")
    parser.add_argument("--patch-size", type=int, help="the tower's patch side in pixels (default: the size's)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run (after --warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--records", type=int, default=96)
    parser.add_argument("--out", default="runs/bench_train.json")
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # one run in a child process
    parser.add_argument("--connector", default="mlp2x_gelu", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print("RESULT " + json.dumps(one_run(args)), flush=True)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    spread_dataset(work / "data", args.records, tower_fields(args)["config"]["image_size"])
    tower = [f"--{flag}={value}" for flag, value in (("image-size", args.image_size), ("patch-size", args.patch_size))
             if value]
    results = []
    for stage, batching, connector in itertools.product(args.stages, args.batching, args.connectors):
        cmd = [sys.executable, __file__, "--stage", stage, "--work", str(work), "--size", args.size,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
               "--batching", batching, "--connector", connector, "--scale", str(args.scale), *tower]
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"{stage:>6} {batching:>8} {connector:>13}  failed: {reason}", flush=True)
            results.append({"stage": stage, "batching": batching, "connector": connector, "error": reason})
            continue
        row = json.loads(lines[-1][len("RESULT "):])
        results.append(row)
        print(f"{stage:>6} {batching:>8} {connector:>13} ({row['image_tokens']:>3} image tokens)  "
              f"{row['tokens_per_s']:8.0f} tok/s  {row['s_per_step']:6.2f} s/step  "
              f"MFU {row['mfu']:6.1%} of {row['peak_tflops']:.3f} TFLOP/s ({row['dtype']})  "
              f"padding {row['padding_share']:5.1%}  peak mem {row['peak_memory_gib']:.2f} GiB", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
