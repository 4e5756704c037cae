"""Training curves as PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss(log_history: list[dict], path: str | Path, title: str = "training loss") -> Path | None:
    """Plot training `loss` (and `eval_loss`, when the run evaluated) against `step` from a Trainer
    log history; returns the PNG path (None if no points)."""
    series = {name: [(row["step"], row[key]) for row in log_history if key in row and "step" in row]
              for name, key in (("train", "loss"), ("eval", "eval_loss"))}
    if not series["train"]:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, points in series.items():
        if points:
            steps, losses = zip(*points)
            ax.plot(steps, losses, marker="o", markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series["eval"]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
