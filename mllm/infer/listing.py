"""What an input is made of: the files it is read from, with sizes and modification times.

A captioning job records its input's fingerprint (`Listing.fingerprint`, in `job.json`) and the
listing itself (`input_listing.json.gz`), so a rerun against different input is refused with
the files that were added, removed or changed (`describe_change`) instead of silently mixing
outputs of two inputs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

LISTING_FILE = "input_listing.json.gz"


@dataclass
class Listing:
    """`entries`: (name, size in bytes, mtime in ns) of every file the input is read from, in read
    order; `skipped`: files found but not read (a folder's non-image files), reported to the user."""

    entries: list[tuple[str, int, int]]
    skipped: list[str] = field(default_factory=list)

    def fingerprint(self) -> dict:
        digest = hashlib.sha256(json.dumps(self.entries, separators=(",", ":")).encode()).hexdigest()
        return {"sha256": digest[:16], "files": len(self.entries), "bytes": sum(e[1] for e in self.entries)}

    def save(self, path: str | Path) -> None:
        temp = Path(f"{path}.tmp-{os.getpid()}")
        with gzip.open(temp, "wt", encoding="utf-8") as handle:
            json.dump({"entries": self.entries, "skipped": self.skipped}, handle)
        os.replace(temp, path)

    @classmethod
    def load(cls, path: str | Path) -> "Listing | None":
        try:
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return None
        return cls([tuple(e) for e in data["entries"]], data.get("skipped", []))


def stat_entry(path: str | Path, name: str | None = None) -> tuple[str, int, int]:
    """(name, size, mtime_ns) of a file; a dangling link gets the link's own stat."""
    try:
        info = os.stat(path)
    except OSError:
        info = os.lstat(path)
    return (str(path) if name is None else name, info.st_size, info.st_mtime_ns)


def _names(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def describe_change(old: Listing | None, new: Listing, old_fingerprint: dict | None = None) -> str:
    """'2 added (a.png, b.png); 1 removed (c.png); 1 changed (d.png: size, mtime)', or a summary
    of the two fingerprints when the old listing is not at hand."""
    if old is None:
        return f"fingerprint {old_fingerprint} -> {new.fingerprint()}"
    before = {e[0]: e[1:] for e in old.entries}
    after = {e[0]: e[1:] for e in new.entries}
    added = [n for n in after if n not in before]
    removed = [n for n in before if n not in after]
    changed = [f"{n} ({'size' if before[n][0] != after[n][0] else 'mtime'})"
               for n in after if n in before and before[n] != after[n]]
    parts = [f"{len(names)} {what} ({_names(names)})"
             for what, names in (("added", added), ("removed", removed), ("changed", changed)) if names]
    return "; ".join(parts) or "the same files in a different order"
