"""`mllm caption`: every input (image or video) once into one JSONL or Parquet file, in input order, written as it goes.

    summary = caption_file(captioner, FolderSource("photos/"), CaptionFileConfig("captions.parquet"), settings)

Rows come from the one engine (`mllm.infer.engine`: decoding in workers, loop guard, length
fitting, error rows) with the columns of `mllm recaption` (data_cards/recaption_output.md). While
the job runs they are appended to `OUT.partial/rows.jsonl` and flushed to disk after every batch,
next to `OUT.partial/job.json` (input fingerprint, model, settings). When the input is done they
become OUT (JSONL: renamed; Parquet: converted), written atomically, and `OUT.partial` is removed.
A rerun of the same command continues after the last complete row; a failing batch loses nothing
written before it. A rerun against another model, other settings or changed input is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from mllm.errors import UsageError
from mllm.infer.engine import CaptionEngine, EngineConfig, Tally, Work
from mllm.infer.job import claim_job, decode_record, job_record
from mllm.infer.rows import SCHEMA
from mllm.infer.sources import ImageSource

OUTPUT_SUFFIXES = (".jsonl", ".parquet")
ROWS_FILE = "rows.jsonl"


@dataclass
class CaptionFileConfig:
    out: str
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(tasks=("detailed",)))
    progress: bool = True


@dataclass
class CaptionSummary(Tally):
    """What one run wrote, and the rows it kept from an earlier run."""

    resumed: int = 0

    def details(self) -> list[str]:
        return [f"{self.resumed} rows kept from an earlier run"]


def partial_folder(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def check_output(out: str | Path) -> None:
    """`--out` must be a new .jsonl / .parquet file (or one this job is still writing)."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a .jsonl or .parquet file")
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--out {out}: unsupported output type {out.suffix!r} (use .jsonl or .parquet)")
    if out.exists():
        raise UsageError(f"--out {out} exists; delete it or choose another file")


def caption_job(source: ImageSource, config: CaptionFileConfig, model_id: str, model_revision: str | None,
                settings: dict[str, Any]) -> dict[str, Any]:
    engine = config.engine
    return job_record(source, engine.tasks, model_id, model_revision, settings, backend=engine.backend,
                      output=Path(config.out).name, decode=decode_record(engine))


def _written_keys(journal: Path) -> list[str]:
    """Keys of the complete rows in the journal; a torn last line (a killed run) is cut off."""
    if not journal.is_file():
        return []
    keys, good = [], 0
    with journal.open("rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            try:
                keys.append(json.loads(line)["key"])
            except (ValueError, KeyError):
                break
            good += len(line)
    if good != journal.stat().st_size:
        with journal.open("r+b") as handle:
            handle.truncate(good)
    return keys


def _batches(items: Iterator, size: int) -> Iterator[list[Work]]:
    while batch := [Work(None, item) for item in islice(items, size)]:
        yield batch


def _finish(journal: Path, out: Path) -> None:
    """The journal becomes OUT, atomically."""
    if out.suffix.lower() == ".jsonl":
        os.replace(journal, out)
        return
    temp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with pq.ParquetWriter(temp, SCHEMA, compression="zstd") as writer, journal.open(encoding="utf-8") as lines:
        while chunk := [json.loads(line) for line in islice(lines, 10_000)]:
            writer.write_table(pa.Table.from_pylist(chunk, schema=SCHEMA))
    os.replace(temp, out)


def caption_file(captioner, source: ImageSource, config: CaptionFileConfig, settings: dict[str, Any]
                 ) -> CaptionSummary:
    """Caption every input of `source` into `config.out` (or finish an interrupted run of the same job)."""
    out, partial = Path(config.out), partial_folder(config.out)
    check_output(out)
    engine = CaptionEngine(captioner, settings, config.engine)
    listing = source.listing()
    partial.mkdir(parents=True, exist_ok=True)
    with open(partial / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another `mllm caption` is writing {out}") from None
        job = caption_job(source, replace(config, engine=engine.config), captioner.model_id,
                          captioner.model_revision, engine.settings)
        claim_job(partial, job, listing)
        summary = _run(engine, source, partial / ROWS_FILE, config)
        summary.files_not_read = listing.skipped
        _finish(partial / ROWS_FILE, out)
    shutil.rmtree(partial)
    return summary


def _run(engine: CaptionEngine, source: ImageSource, journal: Path, config: CaptionFileConfig) -> CaptionSummary:
    started, written = time.monotonic(), _written_keys(journal)
    items = iter(source)
    for position, (key, item) in enumerate(zip(written, items)):  # `written` first: zip must not take an extra item
        if item.key != key:
            raise UsageError(f"{journal}: row {position} is {key!r} but the input's is {item.key!r}: the input "
                             f"changed; delete {journal.parent} to start over")
    summary = CaptionSummary(resumed=len(written))
    total = source.count()
    progress = tqdm(total=None if total is None else total - len(written), unit="img", desc="caption",
                    disable=not config.progress, dynamic_ncols=True)
    with journal.open("a", encoding="utf-8") as handle:
        for _, rows in engine.run(_batches(items, engine.batch_size)):
            handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            handle.flush()
            os.fsync(handle.fileno())
            summary.count(rows)
            progress.update(len(rows))
    progress.close()
    summary.seconds = time.monotonic() - started
    return summary
