"""Errors meant for people.

Every problem a user can fix (a missing folder, a wrong layout, an unreadable frame, a label count that does
not match the frames) is raised as :class:`SSMTLError` with a message that names the file and the fix. The
CLI prints the message alone, without a traceback, and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class SSMTLError(Exception):
    """A user-facing error: the message names the offending path and how to fix it."""


class SettingError(SSMTLError):
    """A setting whose value cannot work, named by its profile field (``train.epochs``).

    :mod:`ssmtl_core.config` raises it; it knows the fields, not the flags and notebook parameters that set them,
    which are :mod:`ssmtl_core.settings`' business: the entry points (the CLI, the notebooks' setup) name those
    too with :func:`ssmtl_core.settings.error_message`.

    Attributes:
        field: ``section.name`` of the setting.
        value: the value refused.
        expected: what it must be, in words (``>= 1``, ``auto, fp32 or bf16``).
    """

    def __init__(self, field: str, value: object, expected: str, names: str = ""):
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"setting {field}{f' ({names})' if names else ''} must be {expected}; got {value!r}. Fix "
                         "the flag, the notebook parameter or the params/*.yaml value.")


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
