"""Show how a few training records become model inputs, with the supervised span marked.

    mllm check-data --config configs/tiny.yaml --n 2

Each sample prints the chat-template prompt (image tokens collapsed to `<image>×N`), the
caption span that carries the loss inside ⟦ ⟧, and the image / prompt / caption token counts.
"""

from __future__ import annotations

from mllm.commands.common import add_config_arguments, config_from_args


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--n", type=int, default=2, help="how many records to show")


def run(args) -> int:
    import tempfile

    from mllm.data.dataset import CaptionDataset
    from mllm.data.inspect import format_view, view_sample
    from mllm.data.records import read_records
    from mllm.model.build import build_captioner

    cfg = config_from_args(args)
    records, skipped = read_records(cfg.data.train, cfg.data.format, cfg.data.image_root, cfg.data.max_records)
    with tempfile.TemporaryDirectory() as work:
        processor = build_captioner(cfg, work, stage="align").processor
    dataset = CaptionDataset(records[: args.n], processor, cfg.data.tasks, skipped)
    for record, task, prompt in dataset.items:
        print(format_view(view_sample(processor, record.key, task, prompt, record.text(task))))
    print(f"{len(records)} usable records in {cfg.data.train}; {skipped.summary()}")
    return 0
