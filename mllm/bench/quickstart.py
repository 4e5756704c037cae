"""The offline quickstart: teach a small captioner to see synthetic scenes, and prove it.

Steps (each skipped when its output already exists, so a rerun resumes):
scenes -> a scene-pretrained tiny SigLIP tower -> the config's `stages` in order, each starting
from the one before (the quickstart configs: `align`, connector only, then `sft`, connector +
LoRA; configs/quickstart_qformer_pretrain.yaml puts BLIP-2's `qformer_pretrain` first) -> caption the held-out test scenes with both tasks, trained and untrained (same config,
zero steps) -> the fidelity evaluator -> report.json / report.md / PNG plots in one folder.
A preset (`mllm.bench.quickstart_presets`) names the scenes, the tower's pretraining and the
training config: `quickstart` (1-2 shapes in 3 columns), `rich` (the rich scenes, configs/rich.yaml)
or `clips` (the quickstart's scenes plus clips of them, `mllm.bench.clip_scenes`: one model trained on
both, then scored on held-out images and held-out clips, `temporal` included; configs/clips.yaml).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

from mllm.bench.clip_scenes import ClipConfig, generate_clips
from mllm.bench.evaluation import evaluate_files
from mllm.bench.fidelity import fidelity_scores
from mllm.bench.quickstart_presets import QUICKSTART_PRESETS
from mllm.bench.report import write_quickstart_report
from mllm.bench.scenes import SceneConfig, generate_scenes, load_truth, scene_preset
from mllm.bench.tower_pretrain import TowerPretrainConfig, pretrain_scene_tower, probe_tower
from mllm.config import load_config
from mllm.errors import UsageError
from mllm.infer.backends.hf import Captioner
from mllm.infer.caption import CaptionFileConfig, caption_file
from mllm.infer.engine import EngineConfig
from mllm.infer.settings import task_settings
from mllm.infer.sources import ManifestSource
from mllm.model.build import build_captioner
from mllm.precision import resolve_dtype
from mllm.run_folder import TRAIN_LOG_FILE, WEIGHTS_FILE
from mllm.train.trainer import train

log = logging.getLogger(__name__)
TASKS = ("detailed", "short")
BASELINE_SCENES = 32
"""The untrained baseline captions the first 32 test scenes (one batch) only: it names no object of
any scene (recall 0), and at its full token budget, loops retried, all 200 took a third of the run."""
BASELINE_CLIPS = 16
"""... and the first 16 test clips (a clip's prompt holds four frames)."""


def _step(name: str, started: float) -> None:
    print(f"[quickstart {time.monotonic() - started:6.0f}s] {name}", flush=True)


def validation_scorer(*truth_paths: Path):
    """The fidelity categories of validation captions, for the training-time validation plots."""
    truths = {key: truth for path in truth_paths for key, truth in load_truth(path).items()}

    def score(task: str, captions: dict[str, str]) -> dict[str, float | None]:
        return fidelity_scores(captions, {k: truths[k] for k in captions}, task=task)["categories"]

    return score


def training_stages(config: str | Path) -> list[str]:
    """The stages the config's `stages` table lists, in its order (each starts from the one before;
    the config's loader refuses a name that is not a stage)."""
    stages = list(load_config(config).stages)
    if not stages:
        raise ValueError(f"{config}: list the training stages under `stages:` (e.g. align, sft)")
    return stages


@dataclass
class QuickstartPlan:
    """A preset resolved with the command's choices: what each step runs."""

    scenes: SceneConfig
    tower: TowerPretrainConfig
    config: Path
    clips: ClipConfig | None = None  # clips drawn like `scenes`, trained on and scored too


def quickstart_plan(preset: str = "quickstart", config: str | Path | None = None, seed: int = 0,
                    scenes: dict | None = None, clips: dict | None = None) -> QuickstartPlan:
    """`preset` with `config` replacing its training config, `scenes` its SceneConfig fields and
    `clips` its ClipConfig fields (a preset with clips only)."""
    if preset not in QUICKSTART_PRESETS:
        raise ValueError(f"unknown quickstart preset {preset!r}; choose from {sorted(QUICKSTART_PRESETS)}")
    spec = QUICKSTART_PRESETS[preset]
    if clips and spec.clips is None:
        raise UsageError(f"--preset {preset} has no clips (--n-train-clips, --n-test-clips): the clips preset has")
    look = scene_preset(spec.scene_preset, seed=seed, **{**spec.scenes, **(scenes or {})})
    clip_config = None if spec.clips is None else ClipConfig(**{**spec.clips, **(clips or {})}, look=look, seed=seed)
    return QuickstartPlan(look, TowerPretrainConfig(**{**spec.tower, "seed": seed}), Path(config or spec.config),
                          clip_config)


def interleave_records(path: Path, *sources: Path) -> Path:
    """One records file of the sources' rows taken in turn (so its first rows hold some of each), their
    relative image and video paths rewritten against `path`'s folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tables = [[json.loads(line) for line in source.read_text().splitlines() if line.strip()] for source in sources]
    for source, table in zip(sources, tables):
        for row in table:
            for field in ("image", "video"):
                if row.get(field):
                    row[field] = os.path.relpath(source.parent / row[field], path.parent)
    rows = [row for turn in zip_longest(*tables) for row in turn if row is not None]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@dataclass(frozen=True)
class TestSet:
    """Held-out records that the trained and the untrained model caption and the evaluator scores."""

    records: Path
    truth: Path
    baseline: int  # the untrained model captions the first this many
    folder: str = ""  # under captions/ and eval/ ("" for the image scenes: where they were before clips)


def run_quickstart(out: str | Path, config: str | Path | None = None, preset: str = "quickstart", seed: int = 0,
                   overrides: list[str] | None = None, scenes: dict | None = None, clips: dict | None = None) -> Path:
    """Run every step of `preset` into `out` (see `quickstart_plan`); returns the path of report.md."""
    plan = quickstart_plan(preset, config, seed, scenes, clips)
    config = plan.config
    out, started = Path(out), time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    scenes = out / "scenes"
    if not (scenes / "test_truth.jsonl").exists():
        _step("generating scenes", started)
        generate_scenes(scenes, plan.scenes)
    tests = {"images": TestSet(scenes / "test.jsonl", scenes / "test_truth.jsonl", BASELINE_SCENES)}
    train_file, eval_file, eval_truths = scenes / "train.jsonl", scenes / "val.jsonl", [scenes / "val_truth.jsonl"]
    if plan.clips is not None:
        folder = out / "clips"
        if not (folder / "test_truth.jsonl").exists():
            _step("generating clips", started)
            generate_clips(folder, plan.clips)
        tests["clips"] = TestSet(folder / "test.jsonl", folder / "test_truth.jsonl", BASELINE_CLIPS, "clips")
        train_file = interleave_records(out / "mixed" / "train.jsonl", train_file, folder / "train.jsonl")
        eval_file = interleave_records(out / "mixed" / "val.jsonl", eval_file, folder / "val.jsonl")
        eval_truths.append(folder / "val_truth.jsonl")
    tower = out / "tower"
    if not (tower / "config.json").exists():
        _step("pretraining the vision tower on the scenes' facts", started)
        pretrain_scene_tower(scenes, tower, plan.tower)
    probe = probe_tower(tower, scenes)
    _step(f"tower linear-probe accuracy: {json.dumps({k: round(v, 3) for k, v in probe.items()})}", started)

    common = [f"model.vision.name_or_path={tower}", f"data.train={train_file}", f"data.eval={eval_file}",
              *(overrides or [])]
    runs: dict[str, Path] = {}
    trained = None  # the latest stage's run folder
    for stage in training_stages(config):
        folder = out / stage
        extra = [f"model.init_from={trained}"] if trained else []
        if not (folder / WEIGHTS_FILE).exists() or not (folder / TRAIN_LOG_FILE).exists():
            _step(f"training stage {stage}", started)
            train(load_config(config, common + extra + [f"train.stage={stage}", f"train.output_dir={folder}"]),
                  scorer=validation_scorer(*eval_truths))
        runs[stage] = trained = folder

    settings = task_settings(trained, TASKS)
    untrained_config = load_config(config, common + ["train.stage=sft"])
    untrained = build_captioner(untrained_config, out / "untrained", dtype=resolve_dtype("auto", "cpu").dtype,
                                training=False)
    captioners = {"trained": lambda: Captioner.load(trained),
                  "untrained": lambda: Captioner(untrained.model, untrained.processor, model_id="untrained")}
    scores: dict[str, dict[str, dict[str, dict]]] = {name: {} for name in tests}  # test set -> model -> task
    for name, make in captioners.items():
        captioner = make()
        for set_name, test in tests.items():
            source = ManifestSource(str(test.records if name == "trained" else _first(test.records, test.baseline)))
            for task in TASKS:
                path = out / "captions" / test.folder / f"{name}_{task}.jsonl"
                if not path.exists():
                    _step(f"captioning {source.count()} test {set_name} ({name}, {task})", started)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    engine = EngineConfig(tasks=(task,), video=untrained_config.data.video)
                    caption_file(captioner, source, CaptionFileConfig(str(path), engine, progress=False), settings)
                scores[set_name].setdefault(name, {})[task] = evaluate_files(
                    path, test.truth, field=f"{task}_caption", task=task,
                    out_dir=out / "eval" / test.folder / f"{name}_{task}")
    report = write_quickstart_report(out, scores["images"], probe, runs, seconds=time.monotonic() - started,
                                     preset=preset, clip_scores=scores.get("clips"))
    _step(f"done: report at {report}", started)
    return report


def _first(records: Path, n: int) -> Path:
    """`records` cut to its first `n` rows, beside it (the untrained baseline's test set)."""
    path = records.with_name(f"{records.stem}_first{n}.jsonl")
    path.write_text("".join(records.read_text().splitlines(keepends=True)[:n]))
    return path
