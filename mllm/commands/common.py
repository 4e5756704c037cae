"""Argument helpers shared by the verbs."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from mllm.config import Config, DType, GenerationSettings, load_config
from mllm.errors import UsageError


def add_config_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def config_from_args(args, overrides: list[str] | None = None) -> Config:
    return load_config(args.config, args.overrides if overrides is None else overrides)


def add_generation_arguments(parser) -> None:
    """Decoding flags; unset ones keep the model's saved per-task settings."""
    g = parser.add_argument_group("generation")
    g.add_argument("--batch-size", type=batch_size_arg, metavar="N|auto",
                   help="images per batch; auto: what the device holds (mllm/infer/batch_size.py). Default: the "
                        "run's generation.<task>.batch_size, which is auto unless its config set one")
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--num-beams", type=int)
    g.add_argument("--do-sample", action="store_true", default=None)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)
    g.add_argument("--repetition-penalty", type=float)


def batch_size_arg(value: str) -> int | str:
    """`--batch-size`: a positive number or `auto`."""
    import argparse

    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number or 'auto'")
    return int(value)


def generation_overrides(args) -> dict:
    names = [f.name for f in GenerationSettings.__dataclass_fields__.values()]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def add_engine_arguments(parser) -> None:
    """The captioning engine's flags, shared by `mllm caption` and `mllm recaption`."""
    from mllm.infer.backends import BACKENDS

    g = parser.add_argument_group("engine")
    g.add_argument("--engine", default="hf", choices=sorted(BACKENDS), help="generation backend (default: hf)")
    g.add_argument("--tasks", default=None, help="comma-separated: short, detailed")
    g.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding images")
    g.add_argument("--max-pixels", type=int, help="decompression-bomb guard (default 64M; 0 = off)")
    g.add_argument("--max-file-mb", type=float,
                   help="files larger than this are error rows (default 256 for images, 4096 for videos; 0 = off)")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda:LOCAL_RANK if a GPU is there)")
    g.add_argument("--dtype", default="auto", choices=get_args(DType),
                   help="weights and compute dtype (default auto: bf16 where the device does it natively, "
                        "fp16 on a GPU without bf16, else float32)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--video", action="append", default=[], metavar="KEY=VALUE",
                   help="how videos are sampled, over the run's data.video (repeatable): e.g. window_seconds=30 "
                        "(longer videos: captioned in windows, then as a whole), max_frames=16, sampler=fps, fps=2")
    add_generation_arguments(parser)


def engine_config(args, default_tasks: str, model: Path):
    """The EngineConfig the flags ask for (tasks checked by name; videos sampled per the run's
    `data.video` and `--video`)."""
    from mllm.data.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
    from mllm.data.video import DEFAULT_MAX_BYTES as DEFAULT_MAX_VIDEO_BYTES
    from mllm.infer.engine import EngineConfig
    from mllm.infer.rows import TASKS
    from mllm.infer.settings import video_settings

    tasks = tuple(t.strip() for t in (args.tasks or default_tasks).split(",") if t.strip())
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise UsageError(f"--tasks {args.tasks!r}: each task must be one of {list(TASKS)}")
    if args.num_workers < 0:
        raise UsageError(f"--num-workers {args.num_workers} must be >= 0")
    max_bytes = DEFAULT_MAX_BYTES if args.max_file_mb is None else int(args.max_file_mb * 2**20)
    max_video_bytes = DEFAULT_MAX_VIDEO_BYTES if args.max_file_mb is None else max_bytes
    return EngineConfig(tasks=tasks, backend=args.engine, num_workers=args.num_workers, max_bytes=max_bytes,
                        max_video_bytes=max_video_bytes, video=video_settings(model, args.video),
                        max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels)


def run_folder(path: str) -> Path:
    """`--model`: a finished `mllm train` run folder, checked before anything is loaded."""
    from mllm.run_folder import CONFIG_FILE, WEIGHTS_FILE

    folder = Path(path)
    if not folder.exists():
        raise UsageError(f"--model {path}: no such folder")
    if not folder.is_dir():
        raise UsageError(f"--model {path}: not a folder (a run folder from `mllm train`)")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise UsageError(f"--model {path}: not an mllm run folder (no {name}; did training finish?)")
    return folder
