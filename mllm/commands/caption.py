"""Caption images and videos with a trained model into one JSONL or Parquet file, written as it goes.

    mllm caption --model runs/tiny --images DIR_OR_MANIFEST --out captions.jsonl --tasks detailed

The same engine as `mllm recaption` (decoding in workers, loop guard, length fitting, error rows)
and the same columns, one row per input in input order. Rerunning an interrupted command resumes
after the last row written.
"""

from __future__ import annotations

from mllm.commands.common import add_engine_arguments, engine_config, generation_overrides, run_folder


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a run folder from `mllm train`")
    parser.add_argument("--images", required=True, help="a folder of images and videos, or a JSONL/CSV/Parquet manifest (an `image` or "
                        "`video` path per row)")
    parser.add_argument("--out", required=True, help="output .jsonl or .parquet")
    add_engine_arguments(parser)


def run(args) -> int:
    from pathlib import Path

    from mllm.errors import UsageError
    from mllm.infer.backends import backend_class
    from mllm.run_folder import weights_revision
    from mllm.infer.caption import CaptionFileConfig, caption_file, caption_job, check_output, partial_folder
    from mllm.infer.job import check_job
    from mllm.infer.recaption import default_device
    from mllm.infer.settings import task_settings
    from mllm.infer.sources import open_source
    from mllm.infer.sources.manifest import MANIFEST_SUFFIXES

    model = run_folder(args.model)
    engine = engine_config(args, default_tasks="detailed", model=model)
    settings = task_settings(model, engine.tasks, generation_overrides(args))
    images = Path(args.images)
    if not images.exists():
        raise UsageError(f"--images {images}: no such folder or file")
    if images.is_file() and images.suffix.lower() not in MANIFEST_SUFFIXES:
        raise UsageError(f"--images {images}: not a folder or a .jsonl / .csv / .parquet manifest")
    source = open_source(**{"images" if images.is_dir() else "manifest": str(images)})
    listing = source.listing()
    check_output(args.out)
    config = CaptionFileConfig(args.out, engine=engine, progress=not args.no_progress)
    check_job(partial_folder(args.out), caption_job(source, config, model.resolve().name, weights_revision(model),
                                                    settings), listing)
    backend = backend_class(args.engine)
    backend.check_settings(settings.values())
    captioner = backend.load(model, device=args.device or default_device(), dtype=args.dtype, video=engine.video)
    summary = caption_file(captioner, source, config, settings)
    print(f"wrote {args.out}: {summary.format()}")
    return 0
