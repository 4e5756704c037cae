"""Recaption a folder / manifest / HF dataset / webdataset into Parquet shards (resumable, shardable).

    mllm recaption --model runs/tiny --images photos/ --out recap/
    mllm recaption --model runs/tiny --webdataset 'shards/*.tar' --out recap/
    mllm recaption ... --num-shards 4 --shard-index 0      # one of 4 machines; or run under torchrun

Rerunning the same command resumes: finished shards are kept, the rest is redone.
Per-task decoding defaults to the model's saved `generation:` settings; flags override them.
"""

from __future__ import annotations

from mllm.commands.common import add_engine_argument, add_generation_arguments, generation_overrides, load_engine


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a run folder from `mllm train`")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--images", help="a folder of images (recursive; `<name>.txt` = original caption)")
    inputs.add_argument("--manifest", help="a JSONL / CSV / Parquet file with image path, key, caption columns")
    inputs.add_argument("--dataset", help="a local HF dataset folder (imagefolder, parquet, save_to_disk)")
    inputs.add_argument("--webdataset", help="a glob of webdataset tar shards (img2dataset layout), quoted")
    parser.add_argument("--image-column", help="manifest / dataset image column (default: image / the Image column)")
    parser.add_argument("--key-column", default="key", help="manifest / dataset key column")
    parser.add_argument("--caption-column", help="original-caption column (default: caption, original_caption, text)")
    parser.add_argument("--split", default="train", help="dataset split")
    parser.add_argument("--out", required=True, help="output folder (shards/, job.json, manifest.json)")
    parser.add_argument("--tasks", default="short,detailed", help="comma-separated: short, detailed")
    parser.add_argument("--rows-per-shard", type=int, default=1000)
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding images")
    parser.add_argument("--num-shards", type=int, default=1, help="split the work into N parts ...")
    parser.add_argument("--shard-index", type=int, default=0, help="... and do part i (0-based)")
    parser.add_argument("--max-pixels", type=int, help="decompression-bomb guard (default 64M; 0 = off)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda:LOCAL_RANK if a GPU is there)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_argument(parser)
    add_generation_arguments(parser)


def run(args) -> int:
    from mllm.data.images import DEFAULT_MAX_PIXELS
    from mllm.infer.recaption import RecaptionConfig, default_device, recaption, task_settings
    from mllm.infer.shards import WorkerSlot
    from mllm.infer.sources import open_source

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    source = open_source(images=args.images, manifest=args.manifest, dataset=args.dataset,
                         webdataset=args.webdataset, image_column=args.image_column,
                         key_column=args.key_column, caption_column=args.caption_column, split=args.split)
    settings = task_settings(args.model, tasks, generation_overrides(args))
    config = RecaptionConfig(
        out_dir=args.out, tasks=tasks, rows_per_shard=args.rows_per_shard,
        batch_size=args.batch_size or settings[tasks[0]].batch_size, num_workers=args.num_workers,
        slot=WorkerSlot.from_env(args.shard_index, args.num_shards),
        max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels,
        progress=not args.no_progress,
    )
    captioner = load_engine(args, args.device or default_device(), list(settings.values()))
    summary = recaption(captioner, source, config, settings)
    print(f"{args.out}: {summary.format()}")
    return 0
