"""Evaluate captions of synthetic scenes: fidelity per category, n-gram metrics, style statistics.

    mllm eval --captions captions.jsonl --truth scenes/test_truth.jsonl --out eval/

Writes `eval.json`, `eval.md` (a markdown table) and `categories.png` (a bar plot).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from mllm.data.records import detect_format, read_table_rows  # noqa: E402
from mllm.bench.scenes import load_truth  # noqa: E402
from mllm.bench.fidelity import CATEGORIES, fidelity_scores  # noqa: E402
from mllm.bench.metrics import caption_metrics, length_stats, opener_stats  # noqa: E402

log = logging.getLogger(__name__)
REFERENCE_FIELDS = {"detailed": "caption", "short": "short_caption"}
"""The truth / records column holding each task's reference caption."""


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a JSONL / JSON / CSV / Parquet file, or of a folder of Parquet files (recaption shards)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise ValueError(f"{path}: folder has no .parquet files")
        return [row for f in files for row in pq.read_table(f).to_pylist()]
    return read_table_rows(path, detect_format(path))


def read_field(path: str | Path, field: str) -> dict[str, str | None]:
    """{key: row[field]} of a captions or records file; a null field stays None."""
    rows = read_rows(path)
    bad = [i for i, row in enumerate(rows, 1) if not isinstance(row, dict) or "key" not in row or field not in row]
    if bad:
        raise ValueError(f"{path}: row {bad[0]} (and {len(bad) - 1} more) lacks 'key' or '{field}'")
    return {str(row["key"]): row[field] for row in rows}


def score_captions(captions: dict[str, str | None], truth: dict[str, dict],
                   references: dict[str, str] | None = None, task: str = "detailed") -> dict:
    """Scores of `captions` (by key; None = empty) of `task` for the scenes in `truth` (by key).

    Only keys present in both are scored. References for the n-gram metrics default to each
    truth record's reference for the task. Returns {"n", "categories", "support", "metrics",
    "length", "openers", "reference_openers"}: openers are the most common first two words and their
    share (see `mllm.bench.fidelity` for the categories).
    """
    keys = sorted(k for k in captions if k in truth)
    unknown = len(captions) - len(keys)
    if unknown:
        log.warning("%d captioned keys are not in the truth and are ignored", unknown)
    if not keys:
        raise ValueError("no captioned key is in the truth records")
    reference_field = REFERENCE_FIELDS[task]
    if references is None:
        references = {k: truth[k].get(reference_field) for k in keys}
    missing = [k for k in keys if not references.get(k)]
    if missing:
        raise ValueError(f"no reference '{reference_field}' for {len(missing)} keys, e.g. {missing[:3]}")
    texts = [captions[k] for k in keys]
    fidelity = fidelity_scores({k: captions[k] for k in keys}, {k: truth[k] for k in keys}, task=task)
    return {
        "n": len(keys),
        **fidelity,
        "metrics": caption_metrics({k: captions[k] for k in keys}, {k: references[k] for k in keys}),
        "length": length_stats(texts),
        "openers": opener_stats(texts),
        "reference_openers": opener_stats([references[k] for k in keys]),
    }


def evaluate_files(captions_path: str | Path, truth_path: str | Path, field: str = "caption",
                   out_dir: str | Path | None = None, references_path: str | Path | None = None,
                   task: str = "detailed") -> dict:
    """Score the `field` column of a captions file (JSONL / Parquet, with `key`) as `task` captions
    against `<split>_truth.jsonl`; references come from `<split>.jsonl` beside it unless given.
    Writes eval.json, eval.md and categories.png into `out_dir` when given."""
    truth = load_truth(truth_path)
    captions = read_field(captions_path, field)
    if references_path is None:
        references_path = default_references(truth_path)
    references = read_field(references_path, REFERENCE_FIELDS[task])
    result = score_captions(captions, truth, references, task)
    result["inputs"] = {"captions": str(captions_path), "field": field, "truth": str(truth_path),
                        "references": str(references_path), "task": task}
    if out_dir is not None:
        write_report(result, out_dir)
    return result


def default_references(truth_path: str | Path) -> Path:
    """`test.jsonl` beside `test_truth.jsonl`."""
    truth_path = Path(truth_path)
    name = truth_path.name.removesuffix("_truth.jsonl")
    if name == truth_path.name:
        raise ValueError(f"{truth_path}: not a '<split>_truth.jsonl' file; pass the references file")
    return truth_path.with_name(name + ".jsonl")


def markdown_table(result: dict) -> str:
    """The scores as a markdown table (n/a where a category cannot be scored)."""
    lines = [f"Captions scored: {result['n']}", "", "| measure | value | facts scored |", "|---|---|---|"]
    for name in CATEGORIES:
        value = result["categories"][name]
        lines.append(f"| {name} | {'n/a' if value is None else f'{value:.3f}'} | {result['support'][name]} |")
    for name, value in result["metrics"].items():
        lines.append(f"| {name} | {value:.3f} | |")
    for name, value in result["length"].items():
        lines.append(f"| {name} | {value:.2f} | |")
    openers = result["openers"]
    reference = result["reference_openers"]
    lines.append(f"| most common opener | \"{openers['most_common'] or ''}\" ({openers['most_common_share']:.0%}; "
                 f"references: \"{reference['most_common'] or ''}\", {reference['most_common_share']:.0%}) | |")
    lines.append(f"| distinct openers | {openers['distinct']} | |")
    return "\n".join(lines) + "\n"


def plot_categories(result: dict, path: str | Path) -> Path:
    """Bar plot of the fidelity categories; n/a ones are labelled, not drawn."""
    values = [result["categories"][name] for name in CATEGORIES]
    figure, axis = plt.subplots(figsize=(8, 3.5))
    bars = axis.bar(CATEGORIES, [v or 0.0 for v in values], color="#4a78b5")
    for bar, value in zip(bars, values):
        axis.text(bar.get_x() + bar.get_width() / 2, (value or 0.0) + 0.02,
                  "n/a" if value is None else f"{value:.2f}", ha="center", fontsize=8)
    axis.set_ylim(0, 1.1)
    axis.set_ylabel("score")
    axis.set_title(f"caption fidelity (n={result['n']})")
    axis.tick_params(axis="x", labelrotation=20)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return Path(path)


def write_report(result: dict, out_dir: str | Path) -> Path:
    """eval.json, eval.md and categories.png in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    (out / "eval.md").write_text(markdown_table(result))
    plot_categories(result, out / "categories.png")
    return out
