"""Webdataset tar shards (img2dataset layout) as an input: one unit per tar, read as a stream.

A tar whose format is broken (truncated, corrupt) gives the records read so far and then one
`#unreadable` error item: for the same bytes that is always the same items, so positions stay
stable. A failing file system (an `OSError` with an errno, e.g. EIO on a network mount) is not
about the data: it is raised, the job stops without writing the shard, and a rerun retries.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mllm.data.images import DEFAULT_MAX_BYTES
from mllm.data.video import VIDEO_SUFFIXES
from mllm.errors import UsageError
from mllm.infer.listing import Listing, stat_entry
from mllm.infer.sources.item import Reader, SourceItem, image_extensions


@dataclass
class WebDatasetSource(Reader):
    """Webdataset tar shards (img2dataset / video2dataset layout: `00000.tar` holding `{key}.jpg` or
    `{key}.mp4` (`mllm.data.video.VIDEO_SUFFIXES`), `{key}.txt`, `{key}.json`). `pattern` is a glob or a list of paths. Members over `max_member_bytes` are not
    read (their record is an error row). A key whose files are not next to each other (an unsorted
    tar) gives an error row for each repeat, keyed `{key}#{n}`."""

    pattern: str | list[str]
    max_member_bytes: int = DEFAULT_MAX_BYTES

    def units(self) -> list[str]:
        if "listing" in self.__dict__.get("_cache", {}):
            return [entry[0] for entry in self.listing().entries]
        paths = sorted(glob.glob(self.pattern)) if isinstance(self.pattern, str) else list(self.pattern)
        if not paths:
            raise UsageError(f"no webdataset shards match {self.pattern!r}")
        return paths

    def listing(self) -> Listing:
        return self._cached("listing", lambda: Listing([stat_entry(path) for path in self.units()]))

    def count(self) -> int | None:
        """From img2dataset's `{shard}_stats.json` files, when every shard has one."""
        total = 0
        for shard in self.units():
            stats = Path(shard).with_name(Path(shard).stem + "_stats.json")
            try:
                total += int(json.loads(stats.read_text())["successes"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return total

    def read(self, unit: int) -> Iterator[SourceItem]:
        shard = self.listing().entries[unit][0]
        name = Path(shard).name
        group_key, files, seen = None, {}, {}
        try:
            with tarfile.open(shard, mode="r|*") as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    directory, _, base = member.name.rpartition("/")
                    stem, dot, extension = base.partition(".")
                    key = f"{directory}/{stem}" if directory else stem
                    if key != group_key and group_key is not None:
                        yield self._item(name, group_key, files, seen)
                        files = {}
                    group_key = key
                    if 0 < self.max_member_bytes < member.size:
                        files[(dot + extension).lower()] = member.size  # too large: not read
                        continue
                    handle = archive.extractfile(member)
                    files[(dot + extension).lower()] = handle.read() if handle else b""
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            if isinstance(error, OSError) and error.errno is not None:
                raise OSError(error.errno, f"{name}: reading failed past key {group_key!r} "
                                           f"({error.strerror}); rerun to retry") from error
            if group_key is not None:
                yield self._item(name, group_key, files, seen)
            yield _unreadable(name, shard, f"cannot read shard past key {group_key!r} ({error})")
            return
        if group_key is not None:
            yield self._item(name, group_key, files, seen)
        if _cut_short(shard):
            yield _unreadable(name, shard, f"truncated (no end-of-archive blocks after key {group_key!r})")

    def _item(self, shard_name: str, key: str, files: dict[str, bytes | int], seen: dict[str, int]) -> SourceItem:
        repeats = seen.get(key, 0)
        seen[key] = repeats + 1
        if repeats:
            return SourceItem(f"{key}#{repeats}", None, None, ref=f"{shard_name}/{key}",
                              error=f"{shard_name}: key {key!r} appears again: its files are not next to each "
                                    "other (the tar is not grouped by key, as img2dataset writes it)")
        meta: dict[str, Any] = {}
        if isinstance(files.get(".json"), bytes):
            try:
                meta = json.loads(files[".json"])
            except ValueError:
                meta = {}
        text = files.get(".txt")
        caption = text.decode("utf-8", "replace").strip() if isinstance(text, bytes) else meta.get("caption")
        suffixes = image_extensions()
        image_ext = next((e for e in files if e in suffixes), None)
        video_ext = next((e for e in files if e in VIDEO_SUFFIXES), None)
        ext = image_ext or video_ext
        ref = f"{shard_name}/{key}{ext or ''}"
        if ext is None or (image_ext and video_ext):
            problem = "both an image and a video" if ext else "no image or video"
            return SourceItem(key, None, caption, ref=ref,
                              error=f"{shard_name}: record {key!r} has {problem} ({sorted(files)})")
        data = files[ext]
        if isinstance(data, int):
            return SourceItem(key, None, caption, ref=ref, error=f"{ref}: member too large "
                              f"({data} bytes > max_bytes {self.max_member_bytes})")
        if video_ext:
            return SourceItem(key, None, caption, ref=ref, video=data)
        return SourceItem(key, data, caption, ref=ref)


def _unreadable(name: str, shard: str, reason: str) -> SourceItem:
    return SourceItem(f"{name}#unreadable", None, None, ref=shard, error=f"{name}: {reason}")


def _cut_short(tar_path: str) -> bool:
    """An uncompressed tar cut at a block boundary reads as a shorter, valid archive: check that it
    ends in the two zero blocks every complete tar has. (Compressed shards report truncation themselves.)"""
    with open(tar_path, "rb") as handle:
        head = handle.read(6)
        if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")):
            return False
        size = handle.seek(0, os.SEEK_END)
        if size < 1024 or size % 512:
            return True
        handle.seek(size - 1024)
        return handle.read(1024) != bytes(1024)
