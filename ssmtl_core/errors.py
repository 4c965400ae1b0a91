"""Errors meant for people.

Every problem a user can fix (a missing folder, a wrong layout, an unreadable frame, a label count that does
not match the frames) is raised as :class:`SSMTLError` with a message that names the file and the fix. The
CLI prints the message alone, without a traceback, and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class SSMTLError(Exception):
    """A user-facing error: the message names the offending path and how to fix it."""


def require_dir(path: str | Path, what: str, fix: str) -> Path:
    """Return ``path`` as a Path if it is an existing folder, else raise a clear :class:`SSMTLError`.

    Args:
        path: the folder to check.
        what: what the folder should hold, e.g. "the UCSD Ped2 dataset".
        fix: one sentence telling the user what to do.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise SSMTLError(f"{what} not found: {path} does not exist. {fix}")
    if not path.is_dir():
        raise SSMTLError(f"{what}: {path} is a file, not a folder. {fix}")
    return path
