"""The export as others use it (issue 14 items 17, 18): the README's export commands run in order into
one --out, the weights are readable by other users, and the card's pipeline tag builds a working
transformers pipeline."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config, write_colour_dataset
from PIL import Image

from mllm.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from mllm.train.trainer import train

    root = tmp_path_factory.mktemp("export_files")
    old = os.umask(0o022)
    try:
        return train(tiny_config(write_colour_dataset(root / "data"), root / "run", "train.max_steps=2",
                                 "train.save_steps=1000"))
    finally:
        os.umask(old)


def readme_export_commands() -> list[list[str]]:
    """The `mllm export` commands of the README's export section, in order."""
    section = README.read_text().split("## Export to the Hub", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(line.split("#", 1)[0]) for line in lines if line.startswith("mllm export")]


def test_the_readme_export_commands_run_one_after_another(run, tmp_path, capsys):
    commands = readme_export_commands()
    assert len(commands) >= 3
    outs = set()
    for argv in commands:
        argv = [{"runs/quickstart/sft": str(run), "exports/quickstart": str(tmp_path / "export")}.get(a, a)
                for a in argv[1:]]
        if "--push-to-hub" in argv and "--dry-run" not in argv:
            argv.append("--dry-run")  # the Hub is not reachable from the tests: list the upload instead
        outs.add(argv[argv.index("--out") + 1])
        assert main(argv) == 0, capsys.readouterr()
    assert outs == {str(tmp_path / "export")}  # one --out for all of them
    printed = capsys.readouterr().out
    assert printed.count("dry run, would upload to") == 2 and "you/scene-captioner" in printed


def test_weights_are_readable_like_the_other_files_and_the_card_tag_makes_a_pipeline(run, tmp_path):
    from transformers import pipeline

    from mllm.export import ExportOptions, export_run

    old = os.umask(0o022)
    try:
        exported = export_run(run, tmp_path / "export", ExportOptions(vllm_check=False))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in exported.folder.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o644, modes
    meta = yaml.safe_load((exported.folder / "README.md").read_text().split("---")[1])
    assert meta["pipeline_tag"] == "image-text-to-text"
    captioner = pipeline(meta["pipeline_tag"], model=str(exported.folder))
    assert captioner.task == meta["pipeline_tag"]  # a current task, not one transformers 5 renamed
    image = Image.new("RGB", (32, 32), (220, 30, 30))
    out = captioner(images=image, text=exported.rendered_prompts["detailed"], max_new_tokens=4)
    assert isinstance(out[0]["generated_text"], str)


def test_export_writes_the_dtype_asked_for(run, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    from mllm.cli import main

    out = tmp_path / "bf16"
    assert main(["export", "--model", str(run), "--out", str(out), "--dtype", "bfloat16", "--no-vllm-check"]) == 0
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}
    assert dtypes == {"BF16"}
    model = AutoModelForImageTextToText.from_pretrained(out, dtype="auto")
    assert {p.dtype for p in model.parameters()} == {__import__("torch").bfloat16}
