"""The connector registry: the config's names, pixel shuffle's merge, its token count and training."""

from __future__ import annotations

import json
import typing

import pytest
import torch
from conftest import tiny_config, write_colour_dataset
from transformers.models.idefics3.modeling_idefics3 import Idefics3Connector

from mllm.config import ConnectorName, load_config
from mllm.errors import UsageError
from mllm.model.build import build_captioner
from mllm.model.connectors import CONNECTORS
from mllm.model.connectors.pixel_shuffle import PixelShuffleConnector, merged_tokens, pixel_shuffle
from conftest import TINY


def test_config_names_are_the_registry():
    assert list(typing.get_args(ConnectorName)) == list(CONNECTORS)


def test_pixel_shuffle_merges_each_block_row_major():
    side, scale = 4, 2
    # Patch (row, col) of a 4x4 grid carries the features [row, col].
    grid = torch.tensor([[row, col] for row in range(side) for col in range(side)], dtype=torch.float32)
    merged = pixel_shuffle(grid[None], scale)[0]
    assert merged.shape == (4, 8)
    blocks = {0: (0, 0), 1: (0, 2), 2: (2, 0), 3: (2, 2)}  # token -> the block's top-left patch
    for token, (top, left) in blocks.items():
        expected = [[top + r, left + c] for r in range(scale) for c in range(scale)]
        assert merged[token].tolist() == [v for patch in expected for v in patch], token


@pytest.mark.parametrize("side, scale", [(4, 2), (6, 3), (6, 2), (9, 3)])
def test_pixel_shuffle_matches_idefics3(side, scale):
    features = torch.randn(2, side * side, 5)
    torch.testing.assert_close(pixel_shuffle(features, scale),
                               Idefics3Connector.pixel_shuffle(None, features, scale_factor=scale))


def test_pixel_shuffle_connector_shapes_and_refusals():
    connector = PixelShuffleConnector(vision_width=5, llm_width=7, scale=3)
    assert connector(torch.randn(2, 81, 5)).shape == (2, 9, 7)
    assert merged_tokens(81, 3) == 9 and merged_tokens(16, 1) == 16
    with pytest.raises(ValueError, match=r"scale 3 .* 16 patches \(a 4x4 grid\)"):
        connector(torch.randn(1, 16, 5))
    with pytest.raises(ValueError, match=r"12 patches \(not a square grid\)"):
        merged_tokens(12, 2)


def test_a_grid_the_scale_does_not_divide_is_refused_before_the_llm_loads(tmp_path):
    cfg = load_config(TINY, ["model.connector.type=pixel_shuffle", "model.connector.scale=3"])  # 4x4 patches
    with pytest.raises(UsageError, match=r"model.connector: pixel_shuffle with scale 3 .* \(a 4x4 grid\)"):
        build_captioner(cfg, tmp_path)
    assert not list((tmp_path / "base").glob("*llm*"))


def test_pixel_shuffle_builds_with_a_quarter_of_the_tokens_and_trains(tmp_path):
    from mllm.train.trainer import train

    data = write_colour_dataset(tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "run", "model.connector.type=pixel_shuffle", "train.max_steps=20",
                      "train.logging_steps=5", "train.save_steps=1000")
    built = build_captioner(cfg, tmp_path / "build")
    assert built.processor.image_seq_length == 4  # 4x4 patches, scale 2
    prompt = built.processor.prompt_ids(built.processor.task_prompt("detailed"))
    assert prompt.count(built.processor.image_token_id) == 4
    run = train(cfg)
    losses = [row["loss"] for row in json.loads((run / "train_log.json").read_text())["log_history"] if "loss" in row]
    assert len(losses) == 4 and losses == sorted(losses, reverse=True) and losses[-1] < 0.7 * losses[0], losses
