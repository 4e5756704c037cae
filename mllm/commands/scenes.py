"""Generate a synthetic scenes dataset (shapes with full ground truth) for training and evaluation.

    mllm scenes --out data/scenes --preset quickstart --seed 0

Writes DIR/images/*.png, DIR/{train,val,test}.jsonl caption records and
DIR/{train,val,test}_truth.jsonl facts (see data_cards/synthetic_scenes.md).
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    from mllm.bench.scenes import PRESETS

    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--preset", default="quickstart", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    parser.add_argument("--n-train", type=int, help="training scenes (default: the preset's)")
    parser.add_argument("--n-val", type=int, help="validation scenes (default: the preset's)")
    parser.add_argument("--n-test", type=int, help="test scenes (default: the preset's)")


def run(args) -> int:
    from mllm.bench.scenes import generate_scenes, scene_preset

    overrides = {name: getattr(args, name) for name in ("seed", "n_train", "n_val", "n_test")
                 if getattr(args, name) is not None}
    paths = generate_scenes(args.out, scene_preset(args.preset, **overrides))
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0
