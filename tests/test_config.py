"""YAML configs with dotted overrides, validated against the dataclasses."""

from __future__ import annotations

import pytest

from mllm.config import ConfigError, load_config, save_config
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
