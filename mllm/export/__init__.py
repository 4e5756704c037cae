"""Export a trained run as a Hub-ready checkpoint: transformers files, vLLM check, model card.

    exported = export_run("runs/quickstart", "exports/quickstart", ExportOptions(CardOptions(repo_id="me/cap")))
    push_folder(exported.folder, "me/cap")          # mllm.export.hub
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mllm.config import WeightsDType
from mllm.export.card import CardOptions, write_card
from mllm.export.hf import TRAINING_CONFIG_FILE, Exported, ExportError, export_checkpoint
from mllm.export.vllm_check import check_vllm


@dataclass
class ExportOptions:
    card: CardOptions = field(default_factory=CardOptions)
    max_shard_size: str = "4GB"
    vllm_check: bool = True  # for stock (MLP) exports
    overwrite: bool = False  # replace a previous export in the output folder
    dtype: WeightsDType = "float32"  # the written weights' dtype


def prepare_output(run_dir: Path, out_dir: Path, overwrite: bool) -> None:
    """Refuse to mix files into a folder in use; `overwrite` only clears a previous export."""
    if out_dir.resolve() == run_dir.resolve():
        raise ExportError(f"the export folder must differ from the run folder {run_dir}")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise ExportError(f"{out_dir} exists and is not empty; pass --overwrite to replace a previous export")
    if not (out_dir / TRAINING_CONFIG_FILE).is_file():
        raise ExportError(f"{out_dir} does not look like an mllm export (no {TRAINING_CONFIG_FILE}); "
                          "not deleting it")
    shutil.rmtree(out_dir)


def export_run(run_dir: str | Path, out_dir: str | Path, options: ExportOptions | None = None) -> Exported:
    """Merge, save, check for vLLM (MLP exports) and write the card; `vllm_problems` lists failures."""
    options = options or ExportOptions()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    prepare_output(run_dir, out_dir, options.overwrite)
    exported = export_checkpoint(run_dir, out_dir, options.max_shard_size, dtype=options.dtype)
    if options.vllm_check and not exported.bundled:
        exported.vllm_problems = check_vllm(out_dir)
    write_card(exported, run_dir, options.card)
    return exported
