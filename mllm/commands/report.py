"""Write a one-file HTML report of a recaption run: images beside their captions, length histograms, errors.

    mllm report recap/ --out recap/report.html
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("recaption", help="a `mllm recaption` output folder")
    parser.add_argument("--out", help="the HTML file (default: <recaption>/report.html)")
    parser.add_argument("--max-cards", type=int, default=100, help="image cards shown (the first N rows)")
    parser.add_argument("--thumb-size", type=int, default=200, help="thumbnail side in pixels")


def run(args) -> int:
    from pathlib import Path

    from mllm.report.html import write_report

    out = write_report(args.recaption, args.out or Path(args.recaption) / "report.html",
                       max_cards=args.max_cards, thumb_size=args.thumb_size)
    print(f"wrote {out}")
    return 0
