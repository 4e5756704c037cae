"""Score captions of synthetic scenes against their truth: fidelity per category, BLEU/ROUGE/CIDEr.

    mllm eval --captions captions.jsonl --truth scenes/test_truth.jsonl --out eval/

`--captions` is JSONL or Parquet (a file, or a folder of shards) with `key` and the caption
column (`detailed_caption` / `short_caption`, as `mllm caption` and `mllm recaption` write them).
References for the n-gram metrics default to `<split>.jsonl` beside the truth file.
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--captions", required=True, help="captions file (JSONL / Parquet) or folder of Parquet shards")
    parser.add_argument("--truth", required=True, help="<split>_truth.jsonl from `mllm scenes`")
    parser.add_argument("--field", default="detailed_caption", help="caption column to score")
    parser.add_argument("--references", help="records file with reference captions (default: beside --truth)")
    parser.add_argument("--task", default="detailed", choices=["detailed", "short"],
                        help="what the captions are: detailed (every fact) or short (the main subject only)")
    parser.add_argument("--out", help="folder for eval.json, eval.md and categories.png")


def run(args) -> int:
    from mllm.bench.evaluation import evaluate_files, markdown_table

    result = evaluate_files(args.captions, args.truth, field=args.field, out_dir=args.out,
                            references_path=args.references, task=args.task)
    print(markdown_table(result), end="")
    if args.out:
        print(f"wrote {args.out}/eval.json, eval.md, categories.png")
    return 0
