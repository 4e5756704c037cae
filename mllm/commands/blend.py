"""Blend recaption output into a text-to-image training manifest (detailed / short / original mix).

    mllm blend recap/ --out train.parquet --ratios detailed=0.75,short=0.2,original=0.05

Deterministic per key and seed; prints the realised shares and writes them to `<out>.stats.json`.
"""

from __future__ import annotations

import argparse


def parse_ratios(text: str) -> dict[str, float]:
    """'detailed=0.75,short=0.2,original=0.05' -> {'detailed': 0.75, ...}."""
    try:
        pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--ratios {text!r}: expected name=share,... ({error})") from error


def add_arguments(parser) -> None:
    parser.add_argument("recaption", help="a `mllm recaption` output folder (or one of its Parquet shards)")
    parser.add_argument("--out", required=True, help="the training manifest: .parquet or .jsonl")
    parser.add_argument("--ratios", type=parse_ratios, help="shares of detailed, short, original "
                        "(default detailed=0.75,short=0.2,original=0.05: 95%% synthetic)")
    parser.add_argument("--seed", type=int, default=0, help="changes which keys get which caption source")


def run(args) -> int:
    from mllm.blend import BlendConfig, write_blend

    config = BlendConfig(seed=args.seed) if args.ratios is None else BlendConfig(ratios=args.ratios, seed=args.seed)
    stats = write_blend(args.recaption, args.out, config)
    print(f"{args.out}: {stats.format()}")
    return 0
