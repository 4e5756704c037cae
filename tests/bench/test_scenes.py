"""Synthetic scenes: determinism, disjoint splits, truth consistent with captions, the CLI."""

import hashlib
import json

import pytest
from PIL import Image

from mllm.cli import main
from mllm.bench.scenes import SceneConfig, generate_scenes, load_truth, scene_preset
from mllm.bench.fidelity import fidelity_scores


def small(preset, seed=0):
    return scene_preset(preset, n_train=12, n_val=6, n_test=6, seed=seed)


def digest(folder, split):
    records = [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]
    return records, [hashlib.md5((folder / r["image"]).read_bytes()).hexdigest() for r in records]


def test_same_seed_same_dataset_other_seed_differs(tmp_path):
    a, b, c = (generate_scenes(tmp_path / name, small("rich", seed)) for name, seed in (("a", 1), ("b", 1), ("c", 2)))
    assert all(a[s].read_text() == b[s].read_text() for s in a)
    assert digest(tmp_path / "a", "train")[1] == digest(tmp_path / "b", "train")[1]
    assert a["train"].read_text() != c["train"].read_text()


@pytest.mark.parametrize("preset", ["quickstart", "rich"])
def test_splits_are_disjoint_and_records_complete(tmp_path, preset):
    cfg = small(preset)
    paths = generate_scenes(tmp_path, cfg)
    keys, hashes = [], []
    for split, n in cfg.split_sizes().items():
        records, digests = digest(tmp_path, split)
        assert len(records) == n and paths[split] == tmp_path / f"{split}.jsonl"
        assert all(r["caption"] and r["short_caption"] and r["original_caption"] for r in records)
        assert set(load_truth(tmp_path / f"{split}_truth.jsonl")) == {r["key"] for r in records}
        keys += [r["key"] for r in records]
        hashes += digests
    assert len(set(keys)) == len(keys) and len(set(hashes)) == len(hashes)
    with Image.open(tmp_path / "images" / f"{keys[0]}.png") as image:
        assert image.size == (cfg.image_size, cfg.image_size)


@pytest.mark.parametrize("preset", ["quickstart", "rich"])
def test_truth_consistent_with_detailed_captions(tmp_path, preset):
    generate_scenes(tmp_path, scene_preset(preset, n_train=0, n_val=0, n_test=60, seed=7))
    truth = load_truth(tmp_path / "test_truth.jsonl")
    records = {r["key"]: r for r in map(json.loads, (tmp_path / "test.jsonl").read_text().splitlines())}
    scores = fidelity_scores({k: r["caption"] for k, r in records.items()}, truth)["categories"]
    assert all(v == 1.0 for v in scores.values() if v is not None), scores
    assert (scores["text_seen"] is None) == (preset == "quickstart")


def test_bad_config_and_bad_truth_lines_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown scene preset"):
        scene_preset("huge")
    with pytest.raises(ValueError, match="palette"):
        SceneConfig(palette=("teal",))
    with pytest.raises(ValueError, match="duplicate_prob"):  # would never finish sampling
        SceneConfig(palette=("red",), shapes=("circle",), max_objects=2, duplicate_prob=0.0)
    bad = tmp_path / "test_truth.jsonl"
    bad.write_text('{"key": "a", "objects": []}\nnot json\n')
    with pytest.raises(ValueError, match="test_truth.jsonl:2"):
        load_truth(bad)


def test_scenes_command(tmp_path, capsys):
    assert main(["scenes", "--out", str(tmp_path), "--preset", "quickstart", "--seed", "3",
                 "--n-train", "4", "--n-val", "2", "--n-test", "2"]) == 0
    assert "test.jsonl" in capsys.readouterr().out
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 4
    assert json.loads((tmp_path / "scene_config.json").read_text())["seed"] == 3


def test_detailed_captions_list_objects_in_reading_order(tmp_path):
    generate_scenes(tmp_path, scene_preset("rich", n_train=0, n_val=0, n_test=60, seed=3))
    checked = 0
    for truth in load_truth(tmp_path / "test_truth.jsonl").values():
        first_sentence = truth["caption"].split(". ")[0]
        singles = [o for o in truth["objects"]
                   if sum(p["shape"] == o["shape"] and p["colour"] == o["colour"] for p in truth["objects"]) == 1]
        spots = [first_sentence.find(f"{o['colour']} {o['shape']}") for o in singles]
        assert -1 not in spots, (first_sentence, singles)
        order = [(o["row"], o["col"]) for _, o in sorted(zip(spots, singles), key=lambda pair: pair[0])]
        assert order == sorted(order), first_sentence
        checked += len(singles) > 1
    assert checked > 10


def test_main_subject_is_visible_largest_then_reading_order(tmp_path):
    """The short caption's subject must be decidable from the pixels: among equal sizes it is the first
    object in reading order, never one chosen by hidden drawing order."""
    generate_scenes(tmp_path, scene_preset("rich", n_train=0, n_val=0, n_test=80, seed=5))
    checked = 0
    for truth in load_truth(tmp_path / "test_truth.jsonl").values():
        main = truth["objects"][truth["main_subject"]]
        largest = [o for o in truth["objects"] if o["size"] == main["size"]]
        rank = {"large": 0, "medium": 1, "small": 2}
        assert all(rank[main["size"]] <= rank[o["size"]] for o in truth["objects"]), truth["key"]
        assert (main["row"], main["col"]) == min((o["row"], o["col"]) for o in largest), truth["key"]
        checked += len(largest) > 1
    assert checked > 10


def test_held_out_words_only_in_val_and_test(tmp_path):
    cfg = scene_preset("rich", n_train=150, n_val=60, n_test=60, seed=2, text_prob=0.8)
    generate_scenes(tmp_path, cfg)
    words = {split: [w for t in load_truth(tmp_path / f"{split}_truth.jsonl").values() for w in t["texts"]]
             for split in ("train", "val", "test")}
    assert words["train"] and set(words["train"]) <= set(cfg.words)
    for split in ("val", "test"):
        assert set(words[split]) & set(cfg.held_out_words) and set(words[split]) & set(cfg.words)
    for truth in load_truth(tmp_path / "test_truth.jsonl").values():
        assert truth["held_out_texts"] == [w for w in truth["texts"] if w in cfg.held_out_words]
    with pytest.raises(ValueError, match="held_out_words"):  # Q is in no training word
        SceneConfig(held_out_words=("QAT",))


def test_fills_are_drawn_and_recorded():
    import random

    from mllm.bench.scene_render import render_scene
    from mllm.bench.scenes import Placed, sample_scene

    cfg = scene_preset("rich", jitter=0.0)
    box = (10.0, 10.0, 40.0, 40.0)
    pixels = {}
    for texture in ("plain", "striped", "dotted", "checkered"):
        image = render_scene(cfg, [Placed("square", "red", "large", 0, 0, box, texture)], "white", "plain")
        pixels[texture] = image.crop((12, 12, 38, 38)).tobytes()
    assert len(set(pixels.values())) == 4
    textures = {o["texture"] for _ in range(40) for o in sample_scene(cfg, random.Random(_))[1]["objects"]}
    assert textures == {"plain", "striped", "dotted", "checkered"}
    assert "texture" not in sample_scene(scene_preset("quickstart"), random.Random(0))[1]["objects"][0]


def test_an_object_in_front_has_its_own_size():
    import random

    from mllm.bench.scenes import sample_scene

    cfg = scene_preset("rich", overlap_prob=1.0, duplicate_prob=0.0, enable_text=False, min_objects=2)
    checked = 0
    for seed in range(60):
        truth = sample_scene(cfg, random.Random(seed))[1]
        for rel in truth["relations"]:
            if rel["relation"] == "in front of":
                front, back = truth["objects"][rel["subject"]], truth["objects"][rel["object"]]
                assert (front["row"], front["col"]) == (back["row"], back["col"])
                widths = [o["bbox"][2] - o["bbox"][0] for o in (front, back)]
                if front["size"] != back["size"]:
                    assert (widths[0] > widths[1]) == (front["size"] == "large")
                    checked += 1
    assert checked > 5


def test_rich_preset_has_everything_it_promises(tmp_path):
    generate_scenes(tmp_path, scene_preset("rich", n_train=0, n_val=0, n_test=200, seed=4))
    truths = list(load_truth(tmp_path / "test_truth.jsonl").values())
    objects = [o for t in truths for o in t["objects"]]
    assert {t["image_size"] for t in truths} == {128} and {tuple(t["grid"]) for t in truths} == {(3, 3)}
    assert max(len(t["objects"]) for t in truths) == 4
    assert {o["size"] for o in objects} == {"small", "large"}
    assert {o["texture"] for o in objects} == {"plain", "striped", "dotted", "checkered"}
    assert {o["row"] for o in objects} == {o["col"] for o in objects} == {0, 1, 2}
    assert any(r["relation"] == "in front of" for t in truths for r in t["relations"])
    assert any(c["count"] > 1 for t in truths for c in t["counts"])  # like objects
    signs = [o for o in objects if o["shape"] == "sign"]
    assert signs and all(o["text"] for o in signs)
    for truth in truths:  # the detailed caption names every sign's word, the background and its fill
        assert all(f'"{w}"' in truth["caption"] for w in truth["texts"])
        assert f"{truth['background']['texture']} {truth['background']['colour']} background" in truth["caption"]


def test_every_shape_and_caption_style_has_its_registry_entry():
    from typing import get_args

    from mllm.bench.caption_styles import CAPTION_WRITERS
    from mllm.bench.scene_render import SHAPE_DRAWERS
    from mllm.bench.scenes import SHAPES, SIGN, CaptionStyle

    assert set(SHAPE_DRAWERS) == {*SHAPES, SIGN}
    assert set(CAPTION_WRITERS) == set(get_args(CaptionStyle))
    with pytest.raises(ValueError, match="caption_style"):
        SceneConfig(caption_style="poetic")
