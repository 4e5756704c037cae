"""User errors are one line naming the file, record or flag, exit code 2, before any model loads and
before anything is written (issue 14, items 8 and 9); a corrected command then runs into the same --out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "infer"))
from fake_captioner import FakeCaptioner  # noqa: E402
from inputs import write_images  # noqa: E402

from mllm.cli import main  # noqa: E402
from mllm.config import load_config, save_config  # noqa: E402

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A run folder as `mllm train` leaves it, as far as the commands check before loading."""
    folder = tmp_path / "run"
    folder.mkdir()
    save_config(load_config(TINY), folder / "config.yaml")
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


@pytest.fixture
def no_model_load(monkeypatch):
    from mllm.infer.backends.hf import Captioner

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(Captioner, "load", classmethod(load))


def _fails(capsys, argv: list[str], *words: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"mllm {argv[0]}: error: "), err
    for word in words:
        assert word in err, err
    return err


def test_user_errors_are_one_line_with_exit_2_before_the_model_loads(tmp_path, run_folder, no_model_load, capsys):
    images = write_images(tmp_path / "images", ["a", "b"])
    out = tmp_path / "out"
    model = ["--model", str(run_folder)]
    _fails(capsys, ["recaption", "--model", str(tmp_path / "nope"), "--images", str(images), "--out", str(out)],
           "--model", "nope", "no such folder")
    (tmp_path / "half").mkdir()
    _fails(capsys, ["recaption", "--model", str(tmp_path / "half"), "--images", str(images), "--out", str(out)],
           "not an mllm run folder", "config.yaml")
    _fails(capsys, ["recaption", *model, "--images", str(images / "a.png"), "--out", str(out)],
           "a.png is not a folder")
    (tmp_path / "file").write_text("x")
    _fails(capsys, ["recaption", *model, "--images", str(images), "--out", str(tmp_path / "file")], "--out", "is a file")
    _fails(capsys, ["caption", *model, "--images", str(images), "--out", str(tmp_path)], "--out", "is a folder")
    _fails(capsys, ["caption", *model, "--images", str(images), "--out", str(tmp_path / "c.txt")], "unsupported")
    _fails(capsys, ["caption", *model, "--images", str(images / "a.png"), "--out", str(tmp_path / "c.jsonl")],
           "a.png", "not a folder or a .jsonl")
    _fails(capsys, ["caption", *model, "--images", str(tmp_path / "gone"), "--out", str(tmp_path / "c.jsonl")],
           "--images", "gone", "no such folder or file")
    _fails(capsys, ["recaption", *model, "--images", str(images), "--out", str(out), "--tasks", "long"], "--tasks")
    (tmp_path / "empty.jsonl").write_text("")
    _fails(capsys, ["recaption", *model, "--manifest", str(tmp_path / "empty.jsonl"), "--out", str(out)],
           "empty.jsonl", "no rows")
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "images/a.png"}) + "\n")
    _fails(capsys, ["recaption", *model, "--manifest", str(tmp_path / "m.jsonl"), "--out", str(out)],
           "m.jsonl", "no image column 'image'", "--image-column")
    _fails(capsys, ["recaption", *model, "--images", str(images), "--out", str(out), "--ray", "--num-shards", "2"],
           "--ray", "--num-shards")
    _fails(capsys, ["recaption", *model, "--images", str(images), "--out", str(out), "--video", "frames=3"],
           "--video", "unknown key", "frames")
    _fails(capsys, ["caption", *model, "--images", str(images), "--out", str(tmp_path / "c.jsonl"),
                    "--video", "window_seconds=-1"], "--video", "window_seconds must be > 0")
    for bad in ("0", "lots"):
        with pytest.raises(SystemExit) as stopped:
            main(["recaption", *model, "--images", str(images), "--out", str(out), "--batch-size", bad])
        assert stopped.value.code == 2 and "--batch-size" in capsys.readouterr().err
    assert not out.exists()  # nothing was written by any of them


def _two_split_dataset(folder: Path) -> Path:
    import datasets

    from inputs import png

    rows = {"image": [{"bytes": png(i), "path": None} for i in range(2)], "key": ["x", "y"]}
    features = datasets.Features({"image": datasets.Image(), "key": datasets.Value("string")})
    split = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(folder))
    return folder


def test_a_failed_command_does_not_lock_the_output_folder(tmp_path, run_folder, monkeypatch, capsys):
    from mllm.infer.backends.hf import Captioner
    from mllm.run_folder import weights_revision

    dataset = _two_split_dataset(tmp_path / "ds")
    capsys.readouterr()  # the save's progress bars
    out = tmp_path / "out"
    argv = ["recaption", "--model", str(run_folder), "--dataset", str(dataset), "--out", str(out),
            "--num-workers", "0", "--no-progress"]
    _fails(capsys, argv, "splits ['train', 'validation']", "--split")
    _fails(capsys, argv + ["--split", "test"], "no split 'test'")
    assert not out.exists()

    def fake_load(cls, model_dir, device=None, dtype="auto", video=None):
        fake = FakeCaptioner()
        fake.model_id, fake.model_revision = Path(model_dir).resolve().name, weights_revision(model_dir)
        return fake

    monkeypatch.setattr(Captioner, "load", classmethod(fake_load))
    assert main(argv + ["--split", "validation"]) == 0, capsys.readouterr().err
    assert "2 captioned" in capsys.readouterr().out
    _fails(capsys, argv + ["--split", "train"], "holds a different job", "source")  # now it is this job's folder
    _fails(capsys, argv + ["--split", "validation", "--engine", "vllm"], "holds a different job", "backend")
