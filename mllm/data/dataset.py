"""The training dataset: one sample per (record, task), images decoded lazily and safely."""

from __future__ import annotations

import logging
import multiprocessing

from torch.utils.data import Dataset

from mllm.data.images import ImageDecodeError, load_image
from mllm.data.processor import CaptionProcessor, SampleError
from mllm.data.records import CaptionRecord, SkipReport

log = logging.getLogger(__name__)


class CaptionDataset(Dataset):
    """Samples `{input_ids, labels, pixel_values}`.

    Text problems (no supervised tokens, prompt longer than `max_length`) are found up front and
    the record is skipped into `skipped`. An image that fails to decode is logged by path,
    counted in `decode_failures` and replaced by the next sample, so one bad file never stops a run.
    The count lives in shared memory, so failures met in DataLoader worker processes are counted too.
    """

    def __init__(self, records: list[CaptionRecord], processor: CaptionProcessor, tasks: list[str],
                 skipped: SkipReport | None = None):
        self.processor = processor
        self.skipped = skipped or SkipReport()
        self.items: list[tuple[CaptionRecord, str, str]] = []
        self.lengths: list[int] = []
        for record in records:
            for task in tasks:
                text = record.text(task)
                if not text:
                    continue
                prompt = record.prompt if (record.prompt and task == "detailed") else processor.task_prompt(task, record.key)
                try:
                    encoded = processor.encode(prompt, text, record=f"{record.key} ({task})")
                except SampleError as err:
                    self.skipped.add(str(err), record.key)
                    continue
                self.items.append((record, task, prompt))
                self.lengths.append(len(encoded.input_ids))
        self._decode_failures = multiprocessing.Value("q", 0)

    @property
    def decode_failures(self) -> int:
        """Images that failed to decode so far, in this process and its DataLoader workers."""
        return self._decode_failures.value

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.items):
            raise IndexError(index)  # also ends plain iteration over the dataset
        for offset in range(len(self.items)):
            record, task, prompt = self.items[(index + offset) % len(self.items)]
            try:
                image = load_image(record.image, name=record.key if isinstance(record.image, bytes) else None)
                break
            except ImageDecodeError as err:
                with self._decode_failures.get_lock():
                    self._decode_failures.value += 1
                    failures = self._decode_failures.value
                if failures <= 5:
                    log.warning("skipping unreadable image: %s", err)
        else:
            raise RuntimeError("no image in the dataset could be decoded; see the warnings above")
        encoded = self.processor.encode(prompt, record.text(task), record=record.key)
        return {"input_ids": encoded.input_ids, "labels": encoded.labels,
                "pixel_values": self.processor.pixel_values([image])[0]}

