"""The offline quickstart: teach a small captioner to see synthetic scenes, and prove it.

Steps (each skipped when its output already exists, so a rerun resumes):
scenes -> a scene-pretrained tiny SigLIP tower -> the config's `stages` in order, each starting
from the one before (the quickstart configs: `align`, connector only, then `sft`, connector +
LoRA; configs/quickstart_qformer_pretrain.yaml puts BLIP-2's `qformer_pretrain` first) -> caption the held-out test scenes with both tasks, trained and untrained (same config,
zero steps) -> the fidelity evaluator -> report.json / report.md / PNG plots in one folder.
A preset (`mllm.bench.quickstart_presets`) names the scenes, the tower's pretraining and the
training config: `quickstart` (1-2 shapes in 3 columns) or `rich` (the rich scenes, configs/rich.yaml).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from mllm.bench.evaluation import evaluate_files
from mllm.bench.fidelity import fidelity_scores
from mllm.bench.quickstart_presets import QUICKSTART_PRESETS
from mllm.bench.report import write_quickstart_report
from mllm.bench.scenes import SceneConfig, generate_scenes, load_truth, scene_preset
from mllm.bench.tower_pretrain import TowerPretrainConfig, pretrain_scene_tower, probe_tower
from mllm.config import load_config
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


def _step(name: str, started: float) -> None:
    print(f"[quickstart {time.monotonic() - started:6.0f}s] {name}", flush=True)


def validation_scorer(truth_path: Path):
    """The fidelity categories of validation captions, for the training-time validation plots."""
    truths = load_truth(truth_path)

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


def quickstart_plan(preset: str = "quickstart", config: str | Path | None = None, seed: int = 0,
                    scenes: dict | None = None) -> QuickstartPlan:
    """`preset` with `config` replacing its training config and `scenes` its SceneConfig fields."""
    if preset not in QUICKSTART_PRESETS:
        raise ValueError(f"unknown quickstart preset {preset!r}; choose from {sorted(QUICKSTART_PRESETS)}")
    spec = QUICKSTART_PRESETS[preset]
    return QuickstartPlan(scene_preset(spec.scene_preset, seed=seed, **{**spec.scenes, **(scenes or {})}),
                          TowerPretrainConfig(**{**spec.tower, "seed": seed}), Path(config or spec.config))


def run_quickstart(out: str | Path, config: str | Path | None = None, preset: str = "quickstart", seed: int = 0,
                   overrides: list[str] | None = None, scenes: dict | None = None) -> Path:
    """Run every step of `preset` into `out` (see `quickstart_plan`); returns the path of report.md."""
    plan = quickstart_plan(preset, config, seed, scenes)
    config = plan.config
    out, started = Path(out), time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    scenes = out / "scenes"
    if not (scenes / "test_truth.jsonl").exists():
        _step("generating scenes", started)
        generate_scenes(scenes, plan.scenes)
    tower = out / "tower"
    if not (tower / "config.json").exists():
        _step("pretraining the vision tower on the scenes' facts", started)
        pretrain_scene_tower(scenes, tower, plan.tower)
    probe = probe_tower(tower, scenes)
    _step(f"tower linear-probe accuracy: {json.dumps({k: round(v, 3) for k, v in probe.items()})}", started)

    common = [f"model.vision.name_or_path={tower}", f"data.train={scenes / 'train.jsonl'}",
              f"data.eval={scenes / 'val.jsonl'}", *(overrides or [])]
    runs: dict[str, Path] = {}
    trained = None  # the latest stage's run folder
    for stage in training_stages(config):
        folder = out / stage
        extra = [f"model.init_from={trained}"] if trained else []
        if not (folder / WEIGHTS_FILE).exists() or not (folder / TRAIN_LOG_FILE).exists():
            _step(f"training stage {stage}", started)
            train(load_config(config, common + extra + [f"train.stage={stage}", f"train.output_dir={folder}"]),
                  scorer=validation_scorer(scenes / "val_truth.jsonl"))
        runs[stage] = trained = folder

    test = ManifestSource(str(scenes / "test.jsonl"))
    baseline = scenes / f"test_first{BASELINE_SCENES}.jsonl"
    baseline.write_text("".join((scenes / "test.jsonl").read_text().splitlines(keepends=True)[:BASELINE_SCENES]))
    sources = {"trained": test, "untrained": ManifestSource(str(baseline))}
    settings = task_settings(trained, TASKS)
    untrained = build_captioner(load_config(config, common + ["train.stage=sft"]), out / "untrained",
                                dtype=resolve_dtype("auto", "cpu").dtype, training=False)
    captioners = {"trained": lambda: Captioner.load(trained),
                  "untrained": lambda: Captioner(untrained.model, untrained.processor, model_id="untrained")}
    scores: dict[str, dict[str, dict]] = {}
    for name, make in captioners.items():
        captioner = make()
        for task in TASKS:
            path = out / "captions" / f"{name}_{task}.jsonl"
            if not path.exists():
                _step(f"captioning {sources[name].count()} test scenes ({name}, {task})", started)
                config_out = CaptionFileConfig(str(path), EngineConfig(tasks=(task,)), progress=False)
                caption_file(captioner, sources[name], config_out, settings)
            scores.setdefault(name, {})[task] = evaluate_files(
                path, scenes / "test_truth.jsonl", field=f"{task}_caption", task=task,
                out_dir=out / "eval" / f"{name}_{task}")
    report = write_quickstart_report(out, scores, probe, runs, seconds=time.monotonic() - started, preset=preset)
    _step(f"done: report at {report}", started)
    return report
