"""The `qformer_pretrain` stage (BLIP-2 stage 1): what trains, that its losses fall, the run chain."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from mllm.errors import UsageError
from mllm.infer.backends.hf import Captioner
from mllm.model.build import build_captioner, load_captioner
from mllm.run_folder import OBJECTIVE_FILE, WEIGHTS_FILE
from mllm.train.objectives import build_objective
from mllm.train.qformer_pretrain import hard_negatives
from mllm.train.trainer import train
from conftest import tiny_config
from test_training_runs import StopAt, _records

QFORMER = ["model.connector.type=qformer", "model.connector.num_queries=4", "model.connector.num_layers=1",
           "model.connector.hidden_size=32"]
PRETRAIN = [*QFORMER, "train.stage=qformer_pretrain", "train.lr=3e-3", "train.logging_steps=5"]
CONNECTOR = "model.multi_modal_projector."


def _batch(built, data, n=8):
    from PIL import Image

    proc = built.processor
    samples = []
    for record in _records(data)[:n]:
        enc = proc.encode(proc.task_prompt("detailed"), record.text("detailed"), record.key)
        samples.append({"input_ids": enc.input_ids, "labels": enc.labels,
                        "pixel_values": proc.pixel_values([Image.open(record.image)])[0]})
    return proc.collate(samples)


def test_pretraining_trains_the_qformer_and_its_heads_only(tmp_path, colour_data):
    cfg = tiny_config(colour_data, tmp_path / "run", *PRETRAIN)
    built = build_captioner(cfg, tmp_path / "run")
    from mllm.data.dataset import CaptionDataset

    dataset = CaptionDataset(_records(colour_data), built.processor, cfg.data.tasks)
    objective = build_objective(built, dataset, "qformer_pretrain")
    objective.model(**_batch(built, colour_data))["loss"].backward()
    heads = {id(p) for n, p in objective.model.named_parameters() if n in objective.heads()}
    captioner = dict(built.model.named_parameters())
    trainable = {n for n, p in captioner.items() if p.requires_grad}
    assert trainable and all(n.startswith(CONNECTOR) for n in trainable), "only the connector of the captioner trains"
    got_grad = {n for n, p in captioner.items() if p.grad is not None}
    assert f"{CONNECTOR}query_tokens" in got_grad
    assert any(".crossattention." in n for n in got_grad), "the queries learn to read the tower"
    assert not any(n.startswith(f"{CONNECTOR}projection") for n in got_grad), "no LLM in the loss"
    head_grads = [p for p in objective.model.parameters() if id(p) in heads and p.grad is not None]
    assert head_grads, "the text side and heads train too"
    assert not any(id(p) in heads for p in built.model.parameters()), "heads are not part of the captioner"


def test_pretraining_losses_fall_and_the_run_holds_the_connector(tmp_path, colour_data):
    run = train(tiny_config(colour_data, tmp_path / "pre", *PRETRAIN, "train.max_steps=60"))
    log = json.loads((run / "train_log.json").read_text())["log_history"]
    rows = [row for row in log if "loss" in row]
    assert {"loss_itc", "loss_itm", "loss_itg"} <= set(rows[0])
    assert rows[-1]["loss"] < rows[0]["loss"] * 0.7
    assert rows[0]["loss_itc"] > 0.9 * math.log(8) > rows[-1]["loss_itc"] * 2  # from chance over 8 captions
    assert rows[-1]["loss_itg"] < rows[0]["loss_itg"] / 2  # the caption is generated from the queries
    # ITM is logged; on 8 one-word-apart captions it stays near its 1:2 class prior in this budget
    # (it learns the pairs alone, at lr 3e-3, after ~250 steps), so it is not asserted to fall.
    assert all(0 < row["loss_itm"] < 1 for row in rows)
    weights = load_file(str(run / WEIGHTS_FILE))
    assert weights and all(k.startswith(CONNECTOR) for k in weights), sorted(weights)[:3]
    heads = load_file(str(run / OBJECTIVE_FILE))
    assert heads and not set(heads) & set(weights)
    assert "embeddings.word_embeddings.weight" in heads and "itm_head.weight" in heads


def test_pretraining_resumes_to_identical_weights(tmp_path, colour_data):
    common = [*PRETRAIN, "train.max_steps=8", "train.save_steps=4", "train.batch_size=4"]
    straight = train(tiny_config(colour_data, tmp_path / "straight", *common))
    interrupted = tiny_config(colour_data, tmp_path / "resumed", *common)
    train(interrupted, callbacks=[StopAt(4)])
    resumed = train(interrupted)  # continues from checkpoint-4, text side and heads included
    for name in (WEIGHTS_FILE, OBJECTIVE_FILE):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=f"{name}: {key}")


def test_pretrain_align_sft_chain_saves_and_loads(tmp_path, colour_data):
    pre = train(tiny_config(colour_data, tmp_path / "pre", *PRETRAIN, "train.max_steps=4"))
    pretrained = load_file(str(pre / WEIGHTS_FILE))
    align_cfg = tiny_config(colour_data, tmp_path / "align", "train.stage=align", f"model.init_from={pre}",
                            "train.max_steps=3")
    start = dict(build_captioner(align_cfg, tmp_path / "probe").model.named_parameters())
    fresh = dict(build_captioner(tiny_config(colour_data, tmp_path / "fresh", *QFORMER, "train.stage=align"),
                                 tmp_path / "fresh").model.named_parameters())
    assert start.keys() == fresh.keys()
    for name, value in pretrained.items():
        assert torch.equal(start[name], value), f"align starts from the pretrained {name}"
    assert any(not torch.equal(fresh[name], value) for name, value in pretrained.items()), "pretraining changed nothing"
    for name in start.keys() - pretrained.keys():  # tower and LLM: as a fresh align run has them
        assert torch.equal(start[name], fresh[name]), name
    align = train(align_cfg)
    sft = train(tiny_config(colour_data, tmp_path / "sft", "train.stage=sft", "model.tuning.recipe=lora",
                            f"model.init_from={align}", "train.max_steps=3"))
    loaded = load_captioner(sft)
    assert loaded.model_config.connector.type == "qformer"
    assert loaded.model_config.connector == load_captioner(pre).model_config.connector
    from PIL import Image

    texts = Captioner.load(sft).caption([Image.open(_records(colour_data)[0].image)], "detailed")
    assert len(texts) == 1 and isinstance(texts[0].text, str)


def test_pretraining_refuses_a_connector_without_queries(tmp_path, colour_data):
    cfg = tiny_config(colour_data, tmp_path / "run", "train.stage=qformer_pretrain")  # tiny.yaml: mlp2x_gelu
    with pytest.raises(UsageError, match="train.stage=qformer_pretrain needs model.connector.type=qformer"):
        build_captioner(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "base").exists(), "refused before anything was loaded"



def test_itm_negatives_are_the_batch_pairs_itc_finds_most_alike():
    positive = torch.eye(4, dtype=torch.bool)
    positive[0, 1] = positive[1, 0] = True  # one image with two captions (or one caption twice)
    positive[3] = positive[:, 3] = True  # row 3: every pair matches, so it has no negative
    sim = torch.zeros(4, 4)
    sim[0] = torch.tensor([9.0, 9.0, 0.0, 0.0])  # its positives score highest: never drawn
    sim[1] = torch.tensor([0.0, 0.0, 20.0, 0.0])
    sim[2] = torch.tensor([0.0, 20.0, 0.0, 0.0])
    torch.manual_seed(0)
    draws = torch.stack([hard_negatives(sim, positive) for _ in range(400)])
    assert (draws[:, 0] == 2).all() and (draws[:, 1] == 2).all() and (draws[:, 2] == 1).all()
    assert (draws[:, 3] == -1).all()
    sim[0] = torch.tensor([0.0, 0.0, math.log(3.0), 0.0])
    positive[0, 3] = False  # row 0 now: columns 2 and 3, with odds 3 : 1 by their similarity
    share = (torch.stack([hard_negatives(sim, positive) for _ in range(2000)])[:, 0] == 2).float().mean()
    assert 0.70 < share < 0.80, share


def test_pretraining_refuses_packed_batches_before_building(tmp_path, colour_data):
    cfg = tiny_config(colour_data, tmp_path / "run", *PRETRAIN, "train.packing=true")
    with pytest.raises(UsageError, match="train.stage=qformer_pretrain trains on unpacked batches"):
        train(cfg)
    assert not (tmp_path / "run").exists()
