"""The training dataset: one sample per (record, task), images and clips decoded lazily and safely."""

from __future__ import annotations

import logging
import multiprocessing

from torch.utils.data import Dataset

from mllm.config import FrameSamplingConfig
from mllm.data.images import ImageDecodeError
from mllm.data.processor import CaptionProcessor, SampleError
from mllm.data.records import CaptionRecord, SkipReport
from mllm.data.visuals import clip_sampling, load_visual, longest_timestamps

log = logging.getLogger(__name__)
KINDS = ("image", "video")


class CaptionDataset(Dataset):
    """Samples `{input_ids, labels, pixel_values}`; `pixel_values` are `(frames, C, H, W)`, one frame
    for an image.

    Text problems (no supervised tokens, a prompt longer than `max_length`) are found up front and
    the record is skipped into `skipped`; a clip's prompt is measured at its most frames and widest
    timestamps. A clip's frames are picked by `sampling` (`data.video`, its token cap as a frame cap:
    `mllm.data.visuals.clip_sampling`). An image or video that fails to decode is logged by path,
    counted in `decode_failures` and replaced by the next sample, so one bad file never stops a run.
    The counts live in shared memory, so failures met in DataLoader worker processes are counted too.
    `clips=False` (a stage that trains on images only) skips clip records into `skipped`.
    """

    def __init__(self, records: list[CaptionRecord], processor: CaptionProcessor, tasks: list[str],
                 skipped: SkipReport | None = None, sampling: FrameSamplingConfig | None = None,
                 clips: bool = True):
        self.processor = processor
        self.skipped = skipped or SkipReport()
        self.sampling = clip_sampling(sampling or FrameSamplingConfig(), processor.image_seq_length)
        self.items: list[tuple[CaptionRecord, str, str]] = []
        self.lengths: list[int] = []
        for record in records:
            if record.is_clip and not clips:
                self.skipped.add("a clip (this stage trains on images)", record.source)
                continue
            longest = longest_timestamps(record, self.sampling) if record.is_clip else None
            for task in tasks:
                text = record.text(task)
                if not text:
                    continue
                prompt = record.prompt if (record.prompt and task == "detailed") else processor.task_prompt(task, record.key)
                try:
                    encoded = processor.encode(prompt, text, record=f"{record.key} ({task})", timestamps=longest)
                except SampleError as err:
                    self.skipped.add(str(err), record.key)
                    continue
                self.items.append((record, task, prompt))
                self.lengths.append(len(encoded.input_ids))
        self._failures = multiprocessing.Array("q", len(KINDS))

    @property
    def has_clips(self) -> bool:
        return any(record.is_clip for record, _, _ in self.items)

    @property
    def decode_failures(self) -> int:
        """Images and videos that failed to decode so far, in this process and its DataLoader workers."""
        return sum(self._failures[:])

    def decode_failures_by_kind(self) -> dict[str, int]:
        return dict(zip(KINDS, self._failures[:]))

    def __len__(self) -> int:
        return len(self.items)

    def _failed(self, record: CaptionRecord, error: Exception) -> None:
        with self._failures.get_lock():
            self._failures[KINDS.index("video" if record.is_clip else "image")] += 1
            failures = sum(self._failures[:])
        if failures <= 5:
            log.warning("skipping unreadable %s: %s", "video" if record.is_clip else "image", error)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.items):
            raise IndexError(index)  # also ends plain iteration over the dataset
        for offset in range(len(self.items)):
            record, task, prompt = self.items[(index + offset) % len(self.items)]
            try:
                visual = load_visual(record, self.sampling)
                encoded = self.processor.encode(prompt, record.text(task), record=record.key,
                                                timestamps=visual.timestamps)
                break
            except (ImageDecodeError, SampleError) as err:  # SampleError: a clip longer than its estimate
                self._failed(record, err)
        else:
            raise RuntimeError("no image or video in the dataset could be decoded; see the warnings above")
        return {"input_ids": encoded.input_ids, "labels": encoded.labels,
                "pixel_values": self.processor.pixel_values(visual.images)}
