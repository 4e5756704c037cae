"""`mllm report` in a real headless browser (Debian's chromium): the page loads, shows N cards, screenshots."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "infer"))
from fake_captioner import FakeCaptioner  # noqa: E402
from image_zoo import build_image_zoo  # noqa: E402

from mllm.cli import main  # noqa: E402
from mllm.config import GenerationSettings  # noqa: E402
from mllm.infer.engine import EngineConfig  # noqa: E402
from mllm.infer.recaption import RecaptionConfig, recaption  # noqa: E402
from mllm.infer.sources import FolderSource  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh --dev installs it)")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture
def report(tmp_path) -> tuple[Path, dict, dict]:
    images = tmp_path / "images"
    images.mkdir()
    good, bad = build_image_zoo(images)
    (images / "good_red.txt").write_text("<b>alt</b> text & more")
    settings = {"short": GenerationSettings(max_new_tokens=16), "detailed": GenerationSettings(max_new_tokens=64)}
    recaption(FakeCaptioner(looping=True), FolderSource(str(images)),
              RecaptionConfig(str(tmp_path / "recap"), rows_per_shard=5, engine=EngineConfig(num_workers=0),
                              progress=False), settings)
    out = tmp_path / "site" / "report.html"
    assert main(["report", str(tmp_path / "recap"), "--out", str(out)]) == 0
    return out, good, bad


@needs_chromium
def test_the_page_loads_and_shows_every_card(report, tmp_path):
    page, good, bad = report
    result = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    cards = re.findall(r'<div class="card"', dom)
    assert len(cards) == len(good) + len(bad)
    shown = re.search(r'<span id="shown-count">(\d+)</span>', dom)
    assert shown and int(shown.group(1)) == len(cards)  # the page's script ran over the loaded cards
    assert len(re.findall(r'<img alt="[^"]*" src="data:image/jpeg;base64,', dom)) == len(good)
    assert 'alt="caption length histograms" src="data:image/png;base64,' in dom
    assert len(re.findall(r"<tr><td>", dom)) == len(bad)  # the error table
    assert "&lt;b&gt;alt&lt;/b&gt; text &amp; more" in dom and "<b>alt</b>" not in dom
    assert "detailed:cut" in dom  # guard actions are shown


@needs_chromium
def test_a_screenshot_is_taken(report, tmp_path):
    page, _, _ = report
    shot = tmp_path / "report.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri())
    assert result.returncode == 0 and shot.is_file() and shot.stat().st_size > 5000, result.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1200, 900)
        colours = image.convert("RGB").resize((60, 45)).getcolors(60 * 45)
        assert colours is not None and len(colours) > 10  # not a blank page


def test_histograms_are_a_real_png(report):
    page, _, _ = report
    data = re.search(r'alt="caption length histograms" src="data:image/png;base64,([^"]+)"', page.read_text())
    png = base64.b64decode(data.group(1))
    assert png.startswith(b"\x89PNG")
