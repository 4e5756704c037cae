"""Offline quickstart: synthetic scenes -> tower -> align -> sft -> caption -> evaluate -> report.

    mllm quickstart --out runs/quickstart
    mllm quickstart --out runs/quickstart-qformer --config configs/quickstart_qformer.yaml
    mllm quickstart --preset rich --out runs/rich     # the rich scenes, configs/rich.yaml
    mllm quickstart --preset clips --out runs/clips   # images and clips, one model, configs/clips.yaml

Nothing is downloaded. Rerunning the same command resumes: finished steps are skipped.
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    from mllm.bench.quickstart_presets import QUICKSTART_PRESETS

    parser.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    parser.add_argument("--preset", default="quickstart", choices=sorted(QUICKSTART_PRESETS),
                        help="scenes, tower and training config: quickstart (1-2 shapes) | rich | clips "
                             "(the quickstart's scenes plus clips of them; default: quickstart)")
    parser.add_argument("--config", help="training config (default: the preset's, configs/<preset>.yaml)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, help="training scenes (default: the preset's, 3000)")
    parser.add_argument("--n-test", type=int, help="held-out test scenes (default: the preset's, 200)")
    parser.add_argument("--image-size", type=int,
                        help="scene size in pixels (default: the preset's; quickstart 48 = a 3x3 grid of 16px "
                             "patches, one column per scene column; rich 128)")
    parser.add_argument("--n-train-clips", type=int,
                        help="training clips (presets with clips; default: the preset's, 1200)")
    parser.add_argument("--n-test-clips", type=int,
                        help="held-out test clips (presets with clips; default: the preset's, 100)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def run(args) -> int:
    from mllm.bench.quickstart import run_quickstart

    scenes = {name: getattr(args, name) for name in ("n_train", "n_test", "image_size")
              if getattr(args, name) is not None}
    clips = {name: value for name, value in (("n_train", args.n_train_clips), ("n_test", args.n_test_clips))
             if value is not None}
    report = run_quickstart(args.out, args.config, preset=args.preset, seed=args.seed, overrides=args.overrides,
                            scenes=scenes, clips=clips)
    print(f"report: {report.resolve()}")
    print(f"        {report.with_suffix('.json').resolve()}")
    return 0
