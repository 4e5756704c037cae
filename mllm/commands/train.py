"""Train a captioner stage (align or sft) from a YAML config.

    mllm train --config configs/tiny.yaml --output-dir runs/tiny train.max_steps=100

Extra `dotted.key=value` arguments override the config. Rerunning the same command resumes
from the newest checkpoint in the output folder.
"""

from __future__ import annotations

import typing

from mllm.commands.common import add_config_arguments, config_from_args
from mllm.config import Stage


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--output-dir", help="run folder (overrides train.output_dir)")
    parser.add_argument("--stage", choices=typing.get_args(Stage), help="overrides train.stage")


def run(args) -> int:
    from mllm.train.trainer import train

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"train.output_dir={args.output_dir}")
    if args.stage:
        overrides.append(f"train.stage={args.stage}")
    out = train(config_from_args(args, overrides))
    print(f"saved run to {out}")
    return 0
