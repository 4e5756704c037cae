"""Caption validation during training: what the model writes, watched beside the loss.

Every `train.validation_steps` steps, the model being trained captions the first
`train.validation_samples` records of `data.eval` (each training task, the run's generation
settings, through the captioning engine: loop guard and length fitting, as users get). Their figures (mean words per task, plus whatever a `scorer` returns, e.g. the
benchmark's per-category fidelity) go into the Trainer's log history as `val_<task>_<name>`, the
captions into `validation/step-N.jsonl`, and the curves into `validation.png`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from mllm.data.records import CaptionRecord  # noqa: E402

log = logging.getLogger(__name__)

Scorer = Callable[[str, dict[str, str]], dict[str, float | None]]
"""(task, {record key: caption}) -> {figure name: value}."""
PREFIX = "val_"


class CaptionValidation(TrainerCallback):
    """Every `every` steps, `caption(records) -> {task: [caption per record]}` and score the captions."""

    def __init__(self, records: list[CaptionRecord], caption, every: int, out_dir: str | Path,
                 scorer: Scorer | None = None):
        self.records, self.caption, self.every, self.scorer = records, caption, every, scorer
        self.out_dir = Path(out_dir)

    def validate(self, step: int) -> dict[str, float]:
        """Caption, score and record one validation point; returns the logged figures."""
        keys = [r.key for r in self.records]
        figures, rows = {}, {key: {"key": key} for key in keys}
        for task, texts in self.caption(self.records).items():
            texts = [t or "" for t in texts]
            captions = dict(zip(keys, texts))
            for key, text in captions.items():
                rows[key][task] = text
            figures[f"{PREFIX}{task}_mean_words"] = sum(len(t.split()) for t in texts) / max(len(texts), 1)
            for name, value in (self.scorer(task, captions) if self.scorer else {}).items():
                if value is not None:
                    figures[f"{PREFIX}{task}_{name}"] = value
        folder = self.out_dir / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"step-{step}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
        return figures

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not self.every or state.global_step % self.every or not state.is_world_process_zero:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            figures = self.validate(state.global_step)
        model.train(was_training)
        state.log_history.append({"step": state.global_step, **figures})
        log.info("validation at step %d: %s", state.global_step,
                 ", ".join(f"{k.removeprefix(PREFIX)} {v:.3f}" for k, v in figures.items()))
        plot_validation(state.log_history, self.out_dir / "validation.png")


def plot_validation(log_history: list[dict], path: str | Path) -> Path | None:
    """One panel per task: a line per validation figure in [0, 1] (mean words dashed, on a second
    axis) against step."""
    names = sorted({k for row in log_history for k in row if k.startswith(PREFIX)})
    if not names:
        return None
    tasks = sorted({name.removeprefix(PREFIX).split("_", 1)[0] for name in names})
    fig, axes = plt.subplots(len(tasks), 1, figsize=(8, 3.6 * len(tasks)), squeeze=False)
    for ax, task in zip(axes[:, 0], tasks):
        words = ax.twinx()
        own = [n for n in names if n.removeprefix(PREFIX).split("_", 1)[0] == task]
        colours = plt.get_cmap("tab20")
        for i, name in enumerate(own):
            points = [(row["step"], row[name]) for row in log_history if name in row]
            axis = words if name.endswith("mean_words") else ax
            axis.plot(*zip(*points), marker="o", markersize=3, color=colours(i % 20),
                      linestyle="--" if axis is words else "-", label=name.removeprefix(f"{PREFIX}{task}_"))
        ax.set_xlabel("step")
        ax.set_ylabel("score")
        ax.set_ylim(0, 1.05)
        words.set_ylabel("mean words")
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()[0] + words.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.12, 1.0), borderaxespad=0)
        ax.set_title(f"validation captions: {task}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
