"""The quickstart trains the stages its config lists, in the config's order."""

from __future__ import annotations

import pytest

from mllm.bench.quickstart import training_stages
from mllm.config import ConfigError
from conftest import ROOT


def test_the_quickstart_configs_list_their_stages():
    assert training_stages(ROOT / "configs" / "quickstart.yaml") == ["sft"]
    assert training_stages(ROOT / "configs" / "quickstart_qformer.yaml") == ["sft"]
    pretrain_first = ROOT / "configs" / "quickstart_qformer_pretrain.yaml"
    assert training_stages(pretrain_first) == ["qformer_pretrain", "sft"]


def test_stages_come_from_the_config_in_its_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stages:\n  sft: {train.max_steps: 5}\n")
    assert training_stages(path) == ["sft"]
    path.write_text("stages:\n  align: {}\n  sft: {}\n  pretrain: {}\n")
    with pytest.raises(ConfigError, match="config.stages key: 'pretrain' is not one of 'qformer_pretrain', 'align'"):
        training_stages(path)
    path.write_text("train: {lr: 0.1}\n")
    with pytest.raises(ValueError, match="list the training stages"):
        training_stages(path)
