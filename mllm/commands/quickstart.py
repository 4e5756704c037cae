"""Offline quickstart: synthetic scenes -> tower -> align -> sft -> caption -> evaluate -> report.

    mllm quickstart --out runs/quickstart
    mllm quickstart --out runs/quickstart-qformer --config configs/quickstart_qformer.yaml

Nothing is downloaded. Rerunning the same command resumes: finished steps are skipped.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training config (default: %(default)s)")
    parser.add_argument("--preset", default="quickstart", help="scene preset: quickstart | rich")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=3000, help="training scenes")
    parser.add_argument("--n-test", type=int, default=200, help="held-out test scenes")
    parser.add_argument("--image-size", type=int, default=48,
                        help="scene size in pixels; 48 = a 3x3 grid of 16px patches, one column per scene column")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def run(args) -> int:
    from mllm.bench.quickstart import run_quickstart

    report = run_quickstart(args.out, args.config, preset=args.preset, seed=args.seed, overrides=args.overrides,
                            scenes={"n_train": args.n_train, "n_test": args.n_test, "image_size": args.image_size})
    print(f"report: {report.resolve()}")
    print(f"        {report.with_suffix('.json').resolve()}")
    return 0
