"""YAML configs with dotted overrides, validated against the dataclasses."""

from __future__ import annotations

import re
import typing

import pytest

from mllm.config import ConfigError, Scheduler, load_config, save_config
from conftest import TINY


def test_overrides_apply_and_types_are_checked(tmp_path):
    cfg = load_config(TINY, ["train.lr=1e-3", "model.connector.type=qformer", "model.connector.num_queries=4",
                             "data.tasks=[short]", "generation.short.max_new_tokens=7"])
    assert cfg.train.lr == 1e-3 and cfg.model.connector.num_queries == 4
    assert cfg.data.tasks == ["short"]
    assert cfg.generation["short"].max_new_tokens == 7
    assert cfg.generation["detailed"].max_new_tokens == 48  # from the file, untouched
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("override, message", [
    ("train.learning_rate=1", "unknown key.*learning_rate"),
    ("train.max_steps=ten", "max_steps: expected int"),
    ("model.connector=mlp", "connector: expected a mapping"),
    ("train.lr=fast", "lr: expected a number"),
    ("nonsense", "dotted.key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_stage_overrides_apply_for_their_stage_only(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {stage: align, lr: 0.1}\nstages:\n  align: {train.lr: 0.002, train.max_steps: 240}\n"
                    "  sft: {train.lr: 0.0005}\n")
    assert load_config(path).train.lr == 0.002 and load_config(path).train.max_steps == 240
    sft = load_config(path, ["train.stage=sft"])
    assert sft.train.lr == 0.0005 and sft.train.max_steps == -1
    assert load_config(path, ["train.stage=sft", "train.lr=0.3"]).train.lr == 0.3  # the command line wins


def test_a_stage_table_entry_can_be_overridden_from_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stages:\n  align: {train.lr: 0.002, train.max_steps: 240}\n  sft: {train.max_steps: 100}\n")
    overrides = ["stages.align.train.max_steps=150", "stages.sft.train.max_steps=130", "stages.sft.train.warmup_ratio=0.1"]
    align = load_config(path, ["train.stage=align", *overrides])
    assert (align.train.max_steps, align.train.lr, align.train.warmup_ratio) == (150, 0.002, 0.03)
    sft = load_config(path, ["train.stage=sft", *overrides])
    assert (sft.train.max_steps, sft.train.warmup_ratio) == (130, 0.1)
    assert sft.stages == {"align": {"train.lr": 0.002, "train.max_steps": 150},
                          "sft": {"train.max_steps": 130, "train.warmup_ratio": 0.1}}


@pytest.mark.parametrize("override, field, allowed", [
    ("train.precision=bfloat16", "train.precision", "'auto', 'fp32', 'bf16', 'fp16'"),
    ("model.llm.dtype=bf16", "model.llm.dtype", "'auto', 'float32', 'bfloat16', 'float16'"),
    ("model.tuning.recipe=qlora4", "model.tuning.recipe", "'frozen', 'lora', 'qlora', 'full'"),
    ("train.stage=pretrain", "train.stage", "'qformer_pretrain', 'align', 'sft'"),
    ("stages.allign.train.lr=1", "config.stages key", "'qformer_pretrain', 'align', 'sft'"),
    ("model.vision.select_strategy=cls", "model.vision.select_strategy", "'default', 'full'"),
    ("data.tasks=[detailed,long]", r"data.tasks\[1\]", "'detailed', 'short'"),
    ("generation.long.max_new_tokens=3", "config.generation key", "'detailed', 'short'"),
])
def test_enumerated_fields_reject_other_values_naming_field_and_choices(override, field, allowed):
    with pytest.raises(ConfigError) as caught:
        load_config(TINY, [override])
    assert re.search(field, str(caught.value)) and allowed in str(caught.value), str(caught.value)


def test_stage_names_are_the_recipes_registry_in_pipeline_order():
    from mllm.config import Stage
    from mllm.model.recipes import STAGES

    assert list(typing.get_args(Stage)) == list(STAGES)


def test_scheduler_names_are_transformers_own():
    from transformers.trainer_utils import SchedulerType

    assert set(typing.get_args(Scheduler)) == {s.value for s in SchedulerType}


def test_partial_generation_settings_merge_over_the_defaults(tmp_path):
    cfg = load_config(TINY, ["generation.short.batch_size=4"])
    short = cfg.generation["short"]
    assert short.batch_size == 4
    assert (short.max_new_tokens, short.max_words) == (16, 20)  # 16 from tiny.yaml, 20 the default
    path = tmp_path / "c.yaml"
    path.write_text("generation:\n  detailed: {max_new_tokens: 72}\n")
    detailed = load_config(path).generation["detailed"]
    assert (detailed.max_new_tokens, detailed.max_words) == (72, 120)
    quickstart = load_config(TINY.parent / "quickstart.yaml").generation  # the case the issue found
    assert quickstart["detailed"].max_words == 120 and quickstart["short"].max_words == 20


def test_precision_and_dtype_default_to_auto():
    cfg = load_config(None)
    assert cfg.train.precision == "auto" and cfg.model.llm.dtype == "auto"
    for name in ("quickstart.yaml", "quickstart_qformer.yaml", "tiny.yaml", "llava_siglip_qwen.yaml"):
        path = TINY.parent / name
        assert load_config(path).train.precision == "auto", name
