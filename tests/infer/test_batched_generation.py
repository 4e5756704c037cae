"""Batched greedy captions equal one-at-a-time captions (left padding done right)."""

from __future__ import annotations

from PIL import Image

from mllm.config import GenerationSettings
from mllm.data.records import read_records
from mllm.infer.backends.hf import Captioner


def test_batched_greedy_equals_one_at_a_time(overfit_run):
    run, data = overfit_run
    captioner = Captioner.load(run)
    records = read_records(data)[0]
    sizes = [(32, 32), (64, 40), (17, 90), (300, 200), (32, 32), (50, 50), (90, 17), (128, 128)]
    images = [Image.open(r.image).resize(size) for r, size in zip(records, sizes)]
    prompts = ["Describe this image in detail.",
               "Write a detailed description of everything in this image, including colours and shapes.",
               "What is this?", "Caption this image in a few words.",
               "Describe.", "Give a thorough, descriptive caption of this image.",
               "List the objects in this picture and where they are, please, in full sentences.", "Caption:"]
    settings = GenerationSettings(max_new_tokens=24, batch_size=8)
    batched = captioner.caption(images, "detailed", settings, prompts=prompts)
    single = [captioner.caption([image], "detailed", GenerationSettings(max_new_tokens=24, batch_size=1),
                                prompts=[prompt])[0] for image, prompt in zip(images, prompts)]
    assert [b.token_ids for b in batched] == [s.token_ids for s in single]
    assert len({len(b.token_ids) for b in batched}) > 1 or len({b.text for b in batched}) > 1
    lengths = {len(captioner.processor.prompt_ids(p)) for p in prompts}
    assert len(lengths) > 4  # the batch really mixes prompt lengths (left padding in play)
