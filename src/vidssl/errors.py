"""The root of the project's own errors.

Every error that means "this input, file, shard, sample, key or store is wrong" derives from
`VidsslError` and names the thing in its message; the CLI prints such an error as one line and
exits with 2 (the traceback only with `--debug`). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class VidsslError(Exception):
    """An error about the user's inputs or environment, with a message that names the culprit."""


class InputError(VidsslError, ValueError):
    """An input or argument a stage cannot use (a missing split, a source of the wrong kind)."""
