"""The backend registry: entries load lazily by module path; unknown or unavailable backends are usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mllm.errors import UsageError
from mllm.infer.backends import BACKENDS, backend_class


def test_importing_the_registry_imports_no_backend():
    code = ("import sys, mllm.infer.backends; "
            "print(sorted(m for m in sys.modules if m == 'vllm' or m.startswith('mllm.infer.backends.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_entries_resolve_to_their_class_and_unknown_names_are_refused():
    from mllm.infer.backends.hf import Captioner

    assert set(BACKENDS) >= {"hf", "vllm"} and backend_class("hf") is Captioner
    with pytest.raises(UsageError, match="unknown engine 'sglang'"):
        backend_class("sglang")


def test_a_backend_that_cannot_be_imported_is_a_usage_error(monkeypatch):
    monkeypatch.setitem(BACKENDS, "missing", "mllm.infer.backends.not_written_yet:Nothing")
    with pytest.raises(UsageError, match="engine 'missing' is not available"):
        backend_class("missing")
