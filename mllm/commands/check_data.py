"""Show how a few training records become model inputs, with the supervised span marked.

    mllm check-data --config configs/tiny.yaml --n 2

Each sample prints the chat-template prompt (each image's tokens collapsed to `<image>×N`; a clip's
frames one line each, after their timestamps), the caption span that carries the loss inside ⟦ ⟧,
and the frame times and image / prompt / caption token counts. A clip is decoded as training
decodes it (`data.video`), so the frames shown are the ones the model would see.
"""

from __future__ import annotations

from mllm.commands.common import add_config_arguments, config_from_args


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--n", type=int, default=2, help="how many records to show")


def run(args) -> int:
    import tempfile

    from mllm.data.dataset import CaptionDataset
    from mllm.data.images import ImageDecodeError
    from mllm.data.inspect import format_view, view_sample
    from mllm.data.records import read_records
    from mllm.data.visuals import load_visual
    from mllm.model.build import build_captioner

    cfg = config_from_args(args)
    records, skipped = read_records(cfg.data.train, cfg.data.format, cfg.data.image_root, cfg.data.max_records)
    with tempfile.TemporaryDirectory() as work:
        processor = build_captioner(cfg, work, stage="align").processor
    dataset = CaptionDataset(records[: args.n], processor, cfg.data.tasks, skipped, cfg.data.video)
    for record, task, prompt in dataset.items:
        try:
            timestamps = load_visual(record, dataset.sampling).timestamps if record.is_clip else None
        except ImageDecodeError as error:
            print(f"── {record.key} [{task}] cannot be decoded (training skips it): {error}")
            continue
        print(format_view(view_sample(processor, record.key, task, prompt, record.text(task), timestamps)))
    print(f"{len(records)} usable records in {cfg.data.train}; {skipped.summary()}")
    return 0
