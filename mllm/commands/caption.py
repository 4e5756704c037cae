"""Caption images with a trained model (batched generation) into a JSONL or Parquet file.

    mllm caption --model runs/tiny --images DIR_OR_MANIFEST --out captions.jsonl --task detailed
"""

from __future__ import annotations

from mllm.commands.common import add_engine_argument, add_generation_arguments, generation_overrides, load_engine


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a run folder from `mllm train`")
    parser.add_argument("--images", required=True, help="a folder of images or a JSONL/CSV/Parquet manifest")
    parser.add_argument("--out", required=True, help="output .jsonl or .parquet")
    parser.add_argument("--task", default="detailed", choices=["detailed", "short"])
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    add_engine_argument(parser)
    add_generation_arguments(parser)


def run(args) -> int:
    from mllm.infer.caption_files import caption_images, image_source
    from mllm.infer.generate import with_overrides
    from mllm.run_folder import load_run_config

    settings = with_overrides(load_run_config(args.model).generation[args.task], **generation_overrides(args))
    captioner = load_engine(args, args.device, [settings])
    summary = caption_images(captioner, list(image_source(args.images)), args.task, settings, args.out)
    print(f"wrote {args.out}: {summary['captioned']} captioned, {summary['errors']} errors")
    return 0
