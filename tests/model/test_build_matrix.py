"""Every connector x recipe x tower builds, trains one step, and only the intended weights learn."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mllm.config import load_config
from mllm.model.build import build_captioner
from mllm.model.connectors import CONNECTORS
from mllm.model.recipes import unwrap
from conftest import TINY

TOWERS = {
    "siglip": ["model.vision.config={model_type: siglip_vision_model, hidden_size: 32, intermediate_size: 64, "
               "num_hidden_layers: 1, num_attention_heads: 2, image_size: 32, patch_size: 8}",
               "model.vision.image_processor={image_processor_type: SiglipImageProcessor, size: {height: 32, width: 32}}"],
    "clip": ["model.vision.config={model_type: clip_vision_model, hidden_size: 32, intermediate_size: 64, "
             "num_hidden_layers: 2, num_attention_heads: 2, image_size: 32, patch_size: 8}",
             "model.vision.image_processor={image_processor_type: CLIPImageProcessor, size: {shortest_edge: 32}, "
             "crop_size: {height: 32, width: 32}}"],
}
TOKENS = {"qformer": 8, "pixel_shuffle": 4}  # per image, where not one per patch (num_queries=8, scale 2)
LLM = ["model.llm.config={model_type: llama, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
       "num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 256, tie_word_embeddings: true}"]


def _batch(built):
    proc = built.processor
    enc = proc.encode(proc.task_prompt("detailed"), "A red square on the left.", "r0")
    pixels = proc.pixel_values([Image.new("RGB", (40, 30), (200, 10, 10))])
    return proc.collate([{"input_ids": enc.input_ids, "labels": enc.labels, "pixel_values": pixels[0]}])


@pytest.fixture(scope="module")
def base_dirs(tmp_path_factory):
    """One materialised tiny tower/LLM per tower kind, shared by the whole matrix."""
    return {tower: tmp_path_factory.mktemp(tower) for tower in TOWERS}


@pytest.mark.parametrize("tower", sorted(TOWERS))
@pytest.mark.parametrize("recipe", ["frozen", "lora", "qlora"])
@pytest.mark.parametrize("connector", sorted(CONNECTORS))
def test_build_forward_backward_and_gradients(tower, recipe, connector, base_dirs):
    cfg = load_config(TINY, TOWERS[tower] + LLM + [
        f"model.tuning.recipe={recipe}", f"model.connector.type={connector}", "model.connector.num_queries=8",
        "train.stage=sft", "model.vision.feature_layer=-1"])
    built = build_captioner(cfg, base_dirs[tower])
    llava = unwrap(built.model)
    expected_tokens = TOKENS.get(connector, 16)  # 4x4 patches; CLIP's CLS is dropped
    assert llava.config.image_seq_length == expected_tokens
    assert built.model_config.vision.select_strategy == ("default" if tower == "clip" else "full")

    out = built.model(**_batch(built))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    learned = {n for n, p in built.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in built.model.named_parameters() if p.requires_grad}
    assert learned <= trainable
    assert any("multi_modal_projector" in n for n in learned)
    for name in trainable:
        in_llm = ".language_model." in name or "lm_head" in name
        assert "vision_tower" not in name, name
        if in_llm:
            assert recipe in ("lora", "qlora") and "lora_" in name, name
        else:
            assert "multi_modal_projector" in name, name
    if recipe in ("lora", "qlora"):
        lora = {n for n in trainable if "lora_" in n}
        assert lora and all(".language_model." in n for n in lora)
        assert {n for n in learned if "lora_B" in n}, "LoRA B matrices receive gradients"
    if recipe == "qlora":
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in llava.model.language_model.modules())
        assert not any(isinstance(m, bnb.nn.Linear4bit) for m in llava.model.vision_tower.modules())
        assert not any(isinstance(m, bnb.nn.Linear4bit) for m in llava.model.multi_modal_projector.modules())


def test_partial_tower_unfreezing(tmp_path):
    cfg = load_config(TINY, TOWERS["clip"] + LLM + ["model.vision.trainable_layers=1", "train.stage=align"])
    built = build_captioner(cfg, tmp_path)
    trainable = {n for n, p in built.model.named_parameters() if p.requires_grad}
    tower = {n for n in trainable if "vision_tower" in n}
    assert tower and all(".layers.1." in n for n in tower)  # the last of two blocks only
    assert not any(".language_model." in n for n in trainable)


def test_tower_from_a_full_clip_checkpoint_folder(tmp_path):
    """A Hub-style CLIP checkpoint (text + vision) loads as a tower by path: its vision part."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    clip = CLIPModel(CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8}))
    clip.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "clip")
    cfg = load_config(TINY, LLM + [f"model.vision.config=null", f"model.vision.name_or_path={tmp_path / 'clip'}",
                                   "model.vision.image_processor=null", "train.stage=align"])
    built = build_captioner(cfg, tmp_path / "run")
    tower = unwrap(built.model).model.vision_tower
    assert type(tower).__name__ == "CLIPVisionModel"
    torch.testing.assert_close(tower.embeddings.patch_embedding.weight,
                               clip.vision_model.embeddings.patch_embedding.weight)
    assert built.model_config.vision.select_strategy == "default" and built.processor.image_seq_length == 16


@pytest.mark.parametrize("layer, index", [(0, -3), (1, -2), (-1, -1)])
def test_feature_layer_counts_from_the_patch_embeddings(layer, index, tmp_path):
    """feature_layer 0 is the patch embeddings (transformers 5 alone would read 0 as "no hidden states")."""
    cfg = load_config(TINY, TOWERS["clip"] + LLM + [f"model.vision.feature_layer={layer}", "train.stage=align"])
    llava = unwrap(build_captioner(cfg, tmp_path).model).eval()
    assert llava.config.vision_feature_layer == index
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        hidden = llava.model.vision_tower(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]
        expected = llava.model.multi_modal_projector(hidden[:, 1:])  # CLIP: CLS dropped
        got = llava.model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(torch.stack(list(got)), expected)


def test_feature_layer_beyond_the_tower_is_named(tmp_path):
    cfg = load_config(TINY, TOWERS["clip"] + LLM + ["model.vision.feature_layer=5", "train.stage=align"])
    with pytest.raises(ValueError, match="feature_layer=5 is not a hidden state of a 2-layer tower"):
        build_captioner(cfg, tmp_path)
