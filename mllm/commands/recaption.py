"""Recaption a folder / manifest / HF dataset / webdataset of images and videos into Parquet shards
(resumable, shardable).

    mllm recaption --model runs/tiny --images photos/ --out recap/
    mllm recaption --model runs/tiny --webdataset 'shards/*.tar' --out recap/
    mllm recaption ... --num-shards 4 --shard-index 0      # one of 4 machines; or run under torchrun
    mllm recaption ... --ray                               # a local Ray; --ray ADDRESS joins a cluster

Rerunning the same command resumes: finished shards are kept, the rest is redone. A rerun on input
that changed (files added, removed or modified) is refused. Per-task decoding defaults to the
model's saved `generation:` settings; flags override them. The input, the model folder and the
output folder are checked before anything is written or loaded.
"""

from __future__ import annotations

from mllm.commands.common import add_engine_arguments, engine_config, generation_overrides, run_folder


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a run folder from `mllm train`")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--images", help="a folder of images and videos (recursive; `<name>.txt` = original caption)")
    inputs.add_argument("--manifest", help="a JSONL / CSV / Parquet file with image (or video, start, end), key, caption "
                        "columns")
    inputs.add_argument("--dataset", help="a local HF dataset folder (imagefolder, parquet, save_to_disk)")
    inputs.add_argument("--webdataset", help="a glob of webdataset tar shards (img2dataset layout), quoted")
    parser.add_argument("--image-column", help="manifest / dataset image column (default: image / the Image column)")
    parser.add_argument("--key-column", default="key", help="manifest / dataset key column")
    parser.add_argument("--caption-column", help="original-caption column (default: caption, original_caption, text)")
    parser.add_argument("--image-root", help="manifest: relative paths resolve here, and paths outside it are refused")
    parser.add_argument("--split", help="dataset split (required when the dataset has several)")
    parser.add_argument("--out", required=True, help="output folder (shards/, job.json, manifest.json)")
    parser.add_argument("--rows-per-shard", type=int, default=1000)
    parser.add_argument("--num-shards", type=int, default=1, help="split the work into N parts ...")
    parser.add_argument("--shard-index", type=int, default=0, help="... and do part i (0-based)")
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="run on Ray (pip install 'mllm[ray]'): alone, a local Ray on this machine; with an "
                             "ADDRESS (auto, host:6379, ray://host:10001), that cluster")
    parser.add_argument("--ray-workers", type=int, help="captioner actors (default: one per GPU, else one per 4 CPUs)")
    add_engine_arguments(parser)


def run(args) -> int:
    from mllm.errors import UsageError
    from mllm.infer.backends import backend_class
    from mllm.run_folder import weights_revision
    from mllm.infer.recaption import RecaptionConfig, default_device, recaption, recaption_job
    from mllm.infer.settings import task_settings
    from mllm.infer.shards import OutputFolder, WorkerSlot
    from mllm.infer.sources import open_source

    model = run_folder(args.model)
    engine = engine_config(args, default_tasks="short,detailed", model=model)
    if args.rows_per_shard < 1:
        raise UsageError(f"--rows-per-shard {args.rows_per_shard} must be >= 1")
    settings = task_settings(model, engine.tasks, generation_overrides(args))
    source = open_source(images=args.images, manifest=args.manifest, dataset=args.dataset,
                         webdataset=args.webdataset, image_column=args.image_column, key_column=args.key_column,
                         caption_column=args.caption_column, split=args.split, image_root=args.image_root,
                         max_bytes=engine.max_bytes)
    listing = source.listing()
    config = RecaptionConfig(out_dir=args.out, rows_per_shard=args.rows_per_shard,
                             slot=WorkerSlot.from_env(args.shard_index, args.num_shards), num_shards=args.num_shards,
                             engine=engine, progress=not args.no_progress)
    OutputFolder(args.out).check_job(
        recaption_job(source, config, model.resolve().name, weights_revision(model), settings), listing)
    backend = backend_class(args.engine)
    backend.check_settings(settings.values())
    if args.ray:
        return _run_on_ray(args, model, source, config, settings)
    captioner = backend.load(model, device=args.device or default_device(), dtype=args.dtype, video=engine.video)
    summary = recaption(captioner, source, config, settings)
    print(f"{args.out}: {summary.format()}")
    return 0


def _run_on_ray(args, model, source, config, settings) -> int:
    """`--ray`: the job on Ray (mllm.infer.ray_runner); exit code 1 when a shard failed (a rerun redoes it)."""
    import dataclasses
    import functools
    import os

    from mllm.errors import UsageError
    from mllm.infer.backends import load_backend
    from mllm.infer.ray_runner import RayConfig, recaption_on_ray
    from mllm.run_folder import weights_revision

    if args.num_shards != 1 or int(os.environ.get("WORLD_SIZE", 1)) != 1:
        raise UsageError("--ray schedules the shards itself: give neither --num-shards nor torchrun")
    if args.ray_workers is not None and args.ray_workers < 1:
        raise UsageError(f"--ray-workers {args.ray_workers} must be >= 1")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'mllm[ray]'") from None
    model = model.resolve()  # the workers may run on other machines: absolute paths
    job = dataclasses.replace(config, out_dir=os.path.abspath(args.out))
    make_captioner = functools.partial(load_backend, args.engine, str(model), args.device, args.dtype,
                                       video=config.engine.video)
    summary = recaption_on_ray(make_captioner, source, RayConfig(job, workers=args.ray_workers), settings,
                               model.name, weights_revision(model), address=None if args.ray == "local" else args.ray)
    print(f"{args.out}: {summary.format()}")
    return 1 if summary.failed else 0
