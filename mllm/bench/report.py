"""The quickstart's report: trained vs untrained scores per category and task, with plots."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mllm.bench.fidelity import CATEGORIES  # noqa: E402
from mllm.run_folder import read_train_log  # noqa: E402

METRICS = ("bleu4", "rouge_l", "cider")
TASKS = ("detailed", "short")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _loss_points(run: Path) -> list[tuple[int, float]]:
    log = read_train_log(run)["log_history"]
    return [(row["step"], row["loss"]) for row in log if "loss" in row]


def plot_losses(runs: dict[str, Path], path: Path) -> Path:
    """Every stage's training loss on one axis, each stage's steps following the one before."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    offset = 0
    for stage, run in runs.items():
        points = _loss_points(run)
        if points:
            ax.plot([s + offset for s, _ in points], [v for _, v in points], marker="o", markersize=3, label=stage)
            offset += points[-1][0]
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / caption token)")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_categories(scores: dict[str, dict[str, dict]], task: str, path: Path, what: str = "scenes") -> Path:
    """Grouped bars: each category, trained vs untrained (n/a categories left out)."""
    names = [c for c in CATEGORIES if any(scores[m][task]["categories"].get(c) is not None for m in scores)]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    width = 0.8 / len(scores)
    for i, model in enumerate(scores):
        values = [scores[model][task]["categories"].get(c) or 0.0 for c in names]
        ax.bar([x + i * width for x in range(len(names))], values, width, label=model)
    ax.set_xticks([x + width * (len(scores) - 1) / 2 for x in range(len(names))], names, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(f"caption fidelity on held-out {what} ({task} task)")
    ax.axhline(0.9, color="grey", linestyle="--", linewidth=0.8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def score_table(scores: dict[str, dict[str, dict]], tasks: tuple[str, ...] = TASKS) -> list[str]:
    """Markdown rows: every category, metric, length and opener share, a column per (model, task)."""
    columns = [(m, t) for t in tasks for m in scores]
    lines = ["| category | " + " | ".join(f"{m} ({t})" for m, t in columns) + " |", "|---|" + "---|" * len(columns)]
    for name in CATEGORIES:
        lines.append(f"| {name} | " + " | ".join(_fmt(scores[m][t]["categories"].get(name)) for m, t in columns) + " |")
    for name in METRICS:
        lines.append(f"| {name} | " + " | ".join(_fmt(scores[m][t]["metrics"].get(name)) for m, t in columns) + " |")
    lines.append("| mean words | " + " | ".join(_fmt(scores[m][t]["length"].get("mean_words")) for m, t in columns) + " |")
    lines.append("| share of the most common first two words (references') | " + " | ".join(
        f"{_fmt(scores[m][t]['openers']['most_common_share'])} ({_fmt(scores[m][t]['reference_openers']['most_common_share'])})"
        for m, t in columns) + " |")
    return lines


def _clip_section(out: Path, clip_scores: dict[str, dict[str, dict]]) -> list[str]:
    models = list(clip_scores)
    for task in TASKS:
        plot_categories(clip_scores, task, out / f"categories_clips_{task}.png", what="clips")
    return [
        "## Held-out clips", "",
        f"Test clips: {clip_scores[models[0]]['detailed']['n']} (untrained: the first "
        f"{clip_scores[models[-1]]['detailed']['n']}). `temporal`: each event (appear, move, disappear) named with "
        "the right object, in order, within half the frame interval of its time; the other categories score "
        "each object where it first appears.", "",
        *score_table(clip_scores), "",
        "![clips detailed](categories_clips_detailed.png)", "", "![clips short](categories_clips_short.png)", "",
    ]


def write_quickstart_report(out: Path, scores: dict[str, dict[str, dict]], probe: dict[str, float],
                            runs: dict[str, Path], seconds: float, preset: str = "quickstart",
                            clip_scores: dict[str, dict[str, dict]] | None = None) -> Path:
    """Write report.json, report.md, loss.png and categories_<task>.png into `out`; with `clip_scores`
    (model -> task -> scores on held-out clips) a section and categories_clips_<task>.png for them."""
    plot_losses(runs, out / "loss.png")
    trained = runs[next(reversed(runs))].name
    for task in TASKS:
        plot_categories(scores, task, out / f"categories_{task}.png")
    models = list(scores)
    lines = [
        f"# mllm quickstart report (preset `{preset}`)", "",
        f"Held-out test scenes: {scores[models[0]]['detailed']['n']}; wall time {seconds / 60:.1f} min.",
        "Untrained = the same config with zero training steps (random connector, LoRA at zero), "
        f"scored on the first {scores[models[-1]]['detailed']['n']} of those scenes.", "",
        *score_table(scores), "",
        *(_clip_section(out, clip_scores) if clip_scores else []),
        "Tower linear-probe accuracy (val): " + ", ".join(f"{k} {v:.3f}" for k, v in probe.items()), "",
        "Final training loss: " + ", ".join(f"{s} {_loss_points(r)[-1][1]:.3f}" for s, r in runs.items()
                                            if _loss_points(r)), "",
        "![loss](loss.png)", "", "![detailed](categories_detailed.png)", "", "![short](categories_short.png)", "",
        *[line for stage, run in runs.items() if (run / "validation.png").is_file()
          for line in (f"Validation captions during `{stage}` (fidelity per category over steps):", "",
                       f"![{stage} validation]({run.name}/validation.png)", "")],
        f"Captions: `captions/`; per-run evaluation details: `eval/`; trained model: `{trained}/` "
        f"(`mllm caption --model {trained} ...`, `mllm export --model {trained} ...`).",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps({
        "preset": preset, "seconds": round(seconds, 1), "tower_probe": probe,
        "runs": {k: str(v) for k, v in runs.items()},
        "scores": scores, **({"clip_scores": clip_scores} if clip_scores else {})}, indent=2))
    return out / "report.md"
