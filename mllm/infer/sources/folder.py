"""A folder of images and videos as an input."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mllm.data.video import VIDEO_SUFFIXES
from mllm.errors import UsageError
from mllm.infer.listing import Listing, stat_entry
from mllm.infer.sources.item import Reader, SourceItem, image_extensions


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


@dataclass
class FolderSource(Reader):
    """Images and videos under `root` (recursive, sorted; every suffix Pillow opens, and
    `mllm.data.video.VIDEO_SUFFIXES`). Key: the relative path without suffix; a sidecar `<name>.txt`
    holds the original caption. When two files share a stem (`a.jpg`, `a.png`, `a.mp4`), the later
    one keeps its suffix in the key. Other files are not read; they are listed in `listing().skipped`."""

    root: str

    @property
    def path(self) -> str:
        return self.root

    def _scan(self) -> Listing:
        root = Path(self.root)
        if not root.exists():
            raise UsageError(f"image folder not found: {root}")
        if not root.is_dir():
            raise UsageError(f"{root} is not a folder; a list of images (JSONL / CSV / Parquet) is read with --manifest")
        suffixes = image_extensions() | VIDEO_SUFFIXES
        files, links = [], []
        for folder, dirs, names in os.walk(root):
            files += [Path(folder, n).relative_to(root).as_posix() for n in names]
            links += [Path(folder, d).relative_to(root).as_posix() + "/" for d in dirs
                      if os.path.islink(os.path.join(folder, d))]  # not followed: counted as skipped
        files.sort()
        images = [f for f in files if Path(f).suffix.lower() in suffixes]
        used = set(images) | {Path(f).with_suffix(".txt").as_posix() for f in images}
        skipped = sorted([f for f in files if f not in used] + links)
        if not images:
            raise UsageError(f"{root}: no images or videos ({len(skipped)} other files: {skipped[:3]})")
        return Listing([stat_entry(root / f, f) for f in images], skipped)

    def listing(self) -> Listing:
        return self._cached("listing", self._scan)

    def count(self) -> int | None:
        return len(self.listing().entries)

    def read(self, unit: int = 0) -> Iterator[SourceItem]:
        root = Path(self.root)
        seen: set[str] = set()
        for name, _, _ in self.listing().entries:
            relative = Path(name)
            key = relative.with_suffix("").as_posix()
            if key in seen:
                key = relative.as_posix()
            seen.add(key)
            path = root / relative
            caption = _read_text(path.with_suffix(".txt"))
            if relative.suffix.lower() in VIDEO_SUFFIXES:
                yield SourceItem(key, None, caption, ref=str(path), video=str(path))
            else:
                yield SourceItem(key, str(path), caption, ref=str(path))
