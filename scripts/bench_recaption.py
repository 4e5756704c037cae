"""Benchmark: `mllm recaption` against stock transformers `generate`, same images, same greedy outputs.

    python scripts/bench_recaption.py --model runs/quickstart/sft --images runs/quickstart/scenes/images --n 96

Three ways over the same images, measured side by side in one run, detailed task, greedy:
  1. stock `LlavaForConditionalGeneration.generate`, one image at a time;
  2. stock `generate`, batched (left padding), images decoded in the loop;
  3. `mllm recaption` (DataLoader workers decode ahead, batched generation, Parquet shards).
Prints images/s and the speed-up over (1), and checks that all three give the same captions.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from mllm.config import GenerationSettings
from mllm.infer.backends.hf import Captioner
from mllm.infer.engine import EngineConfig
from mllm.infer.recaption import RecaptionConfig, recaption
from mllm.infer.shards import OutputFolder
from mllm.infer.sources import FolderSource


def stock_generate(captioner: Captioner, images: list[Image.Image], settings: GenerationSettings) -> list[str]:
    """Plain transformers: processor inputs -> model.generate -> decode; no mllm batching helpers."""
    proc = captioner.processor
    inputs = proc.generation_inputs([proc.task_prompt("detailed")] * len(images))
    with torch.inference_mode():
        out = captioner.model.generate(**inputs, pixel_values=proc.pixel_values(images), do_sample=False,
                                       max_new_tokens=settings.max_new_tokens, eos_token_id=captioner.stop_ids,
                                       pad_token_id=proc.tokenizer.pad_token_id)
    return [t.strip() for t in proc.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                                           skip_special_tokens=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", required=True, help="folder of images")
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    captioner = Captioner.load(args.model, device="cpu")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    paths = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.n]
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    for p in paths:
        shutil.copy(p, work / p.name)
    stock_generate(captioner, [Image.open(paths[0]).convert("RGB")], settings)  # warm-up

    results, times = {}, {}
    start = time.perf_counter()
    results["stock, one at a time"] = [stock_generate(captioner, [Image.open(p).convert("RGB")], settings)[0]
                                       for p in paths]
    times["stock, one at a time"] = time.perf_counter() - start

    start = time.perf_counter()
    batched = []
    for i in range(0, len(paths), args.batch_size):
        batched += stock_generate(captioner, [Image.open(p).convert("RGB") for p in paths[i:i + args.batch_size]],
                                  settings)
    results["stock, batched"], times["stock, batched"] = batched, time.perf_counter() - start

    out = work / "out"
    start = time.perf_counter()
    recaption(captioner, FolderSource(str(work)), RecaptionConfig(
        out_dir=str(out), rows_per_shard=len(paths), progress=False,
        engine=EngineConfig(tasks=("detailed",), num_workers=args.num_workers)), {"detailed": settings})
    times["mllm recaption"] = time.perf_counter() - start
    rows = sorted(OutputFolder(out).read_table().to_pylist(), key=lambda r: r["key"])
    results["mllm recaption"] = [r["detailed_caption"] for r in rows]

    base = times["stock, one at a time"]
    print(f"\n{len(paths)} images, batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'method':<24}{'seconds':>9}{'images/s':>10}{'vs one-at-a-time':>18}")
    for name, seconds in times.items():
        print(f"{name:<24}{seconds:>9.1f}{len(paths) / seconds:>10.2f}{base / seconds:>17.1f}x")
    reference = results["stock, one at a time"]
    for name, captions in results.items():
        same = sum(a == b for a, b in zip(captions, reference))
        print(f"same greedy captions as one-at-a-time: {name}: {same}/{len(reference)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
