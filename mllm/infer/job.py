"""What identifies a captioning job, and the check that a rerun is the same job on the same input.

A job folder holds `job.json` (this record) and `input_listing.json.gz` (the files the input was
read from). A rerun whose record differs is refused: when the input changed, the message names
the files added, removed or changed, and says how to start a new job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path
from typing import Any

from mllm.errors import UsageError
from mllm.infer.listing import LISTING_FILE, Listing, describe_change
from mllm.infer.settings import settings_json
from mllm.infer.sources import ImageSource, describe_source

JOB_FILE = "job.json"


class JobMismatch(UsageError):
    """The folder holds another job, or the same job on input that has changed since."""


def decode_record(engine) -> dict[str, Any]:
    """How an `EngineConfig` decodes: the size guards and the video sampling (they change the output)."""
    return {"max_pixels": engine.max_pixels, "max_bytes": engine.max_bytes, "max_video_bytes": engine.max_video_bytes,
            "video": None if engine.video is None else dataclasses.asdict(engine.video)}


def job_record(source: ImageSource, tasks: tuple[str, ...], model_id: str, model_revision: str | None,
               settings: dict, **fields: Any) -> dict[str, Any]:
    """The fields a rerun must match: input (with its fingerprint), tasks, model, decoding, and `fields`."""
    return json.loads(json.dumps({
        "source": describe_source(source), "input": source.listing().fingerprint(), "tasks": list(tasks),
        "model_id": model_id, "model_revision": model_revision,
        "generation_settings": settings_json(settings, tasks), **fields}))


def check_job(root: Path, job: dict[str, Any], listing: Listing) -> bool:
    """True when `root` already holds this job, False when it holds none; raises `JobMismatch` otherwise."""
    path = root / JOB_FILE
    if not path.is_file():
        return False
    existing = json.loads(path.read_text())
    changed = sorted(k for k in set(job) | set(existing) if job.get(k) != existing.get(k))
    if not changed:
        return True
    if changed == ["input"]:
        change = describe_change(Listing.load(root / LISTING_FILE), listing, existing.get("input"))
        raise JobMismatch(f"{root}: the input changed since this job started: {change}. What is finished was made "
                          "from the old input; to caption the new input, start a new job with another --out")
    raise JobMismatch(f"{root} holds a different job (differs in {changed}); rerun the original command to "
                      "resume, or choose a new --out")


def claim_job(root: Path, job: dict[str, Any], listing: Listing) -> None:
    """Record the job on first use (listing first, then job.json); refuse a folder with a different one.
    The caller holds the folder's lock."""
    if check_job(root, job, listing):
        return
    root.mkdir(parents=True, exist_ok=True)
    listing.save(root / LISTING_FILE)
    write_atomic(root / JOB_FILE, json.dumps(job, indent=2).encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Write under a per-process temporary name, fsync, rename, fsync the folder."""
    temp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    with temp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
