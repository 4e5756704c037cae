"""Publish an export folder to the Hugging Face Hub (`create_repo` + `upload_folder`).

The token comes from `HF_TOKEN` or the login cache (`huggingface_hub.get_token`); it is passed to
huggingface_hub and never printed or logged. A dry run lists what would be uploaded, offline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
from huggingface_hub.utils import filter_repo_objects

log = logging.getLogger(__name__)


class HubError(RuntimeError):
    """A push that cannot start (no token, bad repo id)."""


@dataclass
class UploadPlan:
    repo_id: str
    private: bool
    files: list[tuple[str, int]]  # (path in repo, bytes), as upload_folder will send them

    def describe(self) -> str:
        lines = [f"{'private' if self.private else 'public'} model repo {self.repo_id}: {len(self.files)} files, "
                 f"{sum(size for _, size in self.files) / 1e6:.1f} MB"]
        lines += [f"  {path}  ({size:,} bytes)" for path, size in self.files]
        return "\n".join(lines)


def upload_plan(folder: str | Path, repo_id: str, private: bool = False) -> UploadPlan:
    """What `push_folder` would upload: the folder's files minus huggingface_hub's ignored ones."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f"not a folder: {folder}")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"--push-to-hub needs OWNER/NAME, got {repo_id!r}")
    paths = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    kept = filter_repo_objects(paths, ignore_patterns=DEFAULT_IGNORE_PATTERNS)
    return UploadPlan(repo_id, private, [(name, paths[name].stat().st_size) for name in kept])


def push_folder(folder: str | Path, repo_id: str, private: bool = False, commit_message: str | None = None,
                token: str | None = None) -> str:
    """Create the model repo if needed and upload the folder; returns the commit URL."""
    plan = upload_plan(folder, repo_id, private)
    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    log.info("uploading %d files to %s", len(plan.files), repo_id)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                               commit_message=commit_message or "Upload captioner exported with mllm")
    return str(getattr(commit, "commit_url", commit))
