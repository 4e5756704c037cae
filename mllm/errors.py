"""The one error type for mistakes in what the user asked for."""

from __future__ import annotations


class UsageError(ValueError):
    """A bad flag, path, file or record named by the user: `mllm` prints the message on one line and
    exits with code 2, before any model is loaded. Bugs stay ordinary exceptions (with tracebacks)."""
