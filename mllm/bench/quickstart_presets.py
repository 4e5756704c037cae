"""What `mllm quickstart --preset NAME` runs: the scenes, the tower's pretraining and the training
config. Imports nothing heavy: the command line lists the names (`mllm --help` stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass(frozen=True)
class QuickstartPreset:
    """A quickstart preset; command-line flags override `scenes` fields."""

    scene_preset: str  # mllm.bench.scenes.PRESETS
    config: Path  # the training config
    tower: dict = field(default_factory=dict)  # TowerPretrainConfig fields over its defaults
    scenes: dict = field(default_factory=dict)  # SceneConfig fields over the scene preset's
    # ClipConfig fields (mllm.bench.clip_scenes) over its defaults: the preset also trains on clips
    # drawn like its scenes and scores held-out clips; None: images only
    clips: dict | None = None


QUICKSTART_PRESETS: dict[str, QuickstartPreset] = {
    # 48px = a 3x3 grid of 16px patches, one token column per scene column
    "quickstart": QuickstartPreset("quickstart", CONFIGS / "quickstart.yaml",
                                   scenes={"n_train": 3000, "n_test": 200, "image_size": 48}),
    # 128px scenes seen by the tower at 126px in 42px patches: one token per grid cell
    "rich": QuickstartPreset("rich", CONFIGS / "rich.yaml", scenes={"n_train": 3000, "n_test": 200},
                             tower={"hidden_size": 192, "num_layers": 3, "patch_size": 42, "image_size": 126,
                                    "steps": 2000, "lr": 3e-3}),
    # the quickstart's scenes (its 200 test scenes; 2000 training ones, more than its steps see) and
    # tower, plus 4-frame clips of the same shapes appearing, moving and disappearing (configs/clips.yaml
    # says why these numbers): one model for images and clips
    "clips": QuickstartPreset("quickstart", CONFIGS / "clips.yaml",
                              scenes={"n_train": 2000, "n_test": 200, "image_size": 48},
                              clips={"n_train": 1200, "n_val": 100, "n_test": 100}),
}
