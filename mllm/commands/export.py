"""Export a trained run as a Hub-ready transformers checkpoint with a model card, optionally pushed.

    mllm export --model runs/quickstart --out exports/quickstart [--push-to-hub OWNER/NAME] [--private] [--dry-run]

MLP-connector runs become a stock `LlavaForConditionalGeneration` (no custom code) and are checked
for vLLM; runs with other connectors (linear, Q-Former, pixel shuffle) bundle their modeling code
(`trust_remote_code=True`). The Hub
token comes from HF_TOKEN or `hf auth login` and is never printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from mllm.config import WeightsDType


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a run folder from `mllm train`")
    parser.add_argument("--out", required=True, help="the export folder (created; must be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous export in --out")
    parser.add_argument("--push-to-hub", metavar="OWNER/NAME", help="upload the export to this Hub model repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--dry-run", action="store_true", help="with --push-to-hub: list the upload, send nothing")
    parser.add_argument("--report", type=Path, help="evaluation JSON for the card (default: found in the run)")
    parser.add_argument("--license", default="other", help="license id for the card metadata (default: other)")
    parser.add_argument("--dataset", action="append", default=[], help="Hub dataset id for the card (repeatable)")
    parser.add_argument("--max-shard-size", default="4GB", help="safetensors shard size (default: 4GB)")
    parser.add_argument("--dtype", default="float32", choices=get_args(WeightsDType),
                        help="dtype of the written weights (default float32: as trained; LoRA merges in float32 first)")
    parser.add_argument("--no-vllm-check", action="store_true", help="skip the vLLM readiness check")


def run(args) -> int:
    from mllm.export import ExportOptions, export_run
    from mllm.export.card import CardOptions
    from mllm.export.hub import push_folder, upload_plan

    if args.dry_run and not args.push_to_hub:
        raise SystemExit("--dry-run needs --push-to-hub OWNER/NAME")
    card = CardOptions(repo_id=args.push_to_hub, license=args.license, datasets=args.dataset, report=args.report)
    options = ExportOptions(card, args.max_shard_size, vllm_check=not args.no_vllm_check, overwrite=args.overwrite,
                            dtype=args.dtype)
    exported = export_run(args.model, args.out, options)
    loader = ("trust_remote_code=True, the user's opt-in to run its bundled modeling code" if exported.bundled
              else "stock transformers")
    print(f"exported {args.model} to {exported.folder}: {len(exported.files)} files, loads with {loader}")
    if exported.vllm_problems:
        print("vLLM readiness check failed (not pushed):")
        for problem in exported.vllm_problems:
            print(f"  {problem}")
        return 1
    if args.push_to_hub:
        if args.dry_run:
            print("dry run, would upload to " + upload_plan(exported.folder, args.push_to_hub, args.private).describe())
        else:
            print(f"pushed: {push_folder(exported.folder, args.push_to_hub, args.private)}")
    return 0
