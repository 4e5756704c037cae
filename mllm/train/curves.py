"""Training curves as PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss(log_history: list[dict], path: str | Path, title: str = "training loss") -> Path | None:
    """Plot `loss` against `step` from a Trainer log history; returns the PNG path (None if no points)."""
    points = [(row["step"], row["loss"]) for row in log_history if "loss" in row and "step" in row]
    if not points:
        return None
    steps, losses = zip(*points)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
