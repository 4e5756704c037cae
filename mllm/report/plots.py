"""Plots for the recaption report (matplotlib, Agg backend): caption length histograms."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mllm.infer.guards import word_count  # noqa: E402

CAPTION_COLUMNS = {"original": "original_caption", "short": "short_caption", "detailed": "detailed_caption"}


def caption_lengths(rows: Sequence[dict]) -> dict[str, list[int]]:
    """Words per caption for each caption kind, over rows that have one."""
    return {name: [word_count(r[column]) for r in rows if r.get(column)] for name, column in CAPTION_COLUMNS.items()}


def length_histograms_png(rows: Sequence[dict]) -> bytes:
    """One histogram panel per caption kind (words per caption), as PNG bytes."""
    lengths = caption_lengths(rows)
    figure, axes = plt.subplots(1, len(lengths), figsize=(4 * len(lengths), 3), squeeze=False)
    for axis, (name, values) in zip(axes[0], lengths.items()):
        if values:
            axis.hist(values, bins=min(30, max(1, len(set(values)))), color="#4a78b5")
            axis.axvline(sum(values) / len(values), color="#c44", linestyle="--", label=f"mean {sum(values) / len(values):.1f}")
            axis.legend()
        else:
            axis.text(0.5, 0.5, "none", ha="center", va="center", transform=axis.transAxes)
        axis.set_title(f"{name} captions (n={len(values)})")
        axis.set_xlabel("words")
        axis.set_ylabel("captions")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
