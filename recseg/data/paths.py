"""Output paths the user names: checked before any work, and write failures (disk full, a
read-only place) reported as one line naming the path."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from recseg.errors import InputError

# errno values that mean "this place cannot take the output": the user's to fix (exit 2)
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
)


class WriteFailure(OSError):
    """An output could not be written (its ``filename``: the path the user named)."""


def check_target(label: str, path: str | Path) -> None:
    """``InputError`` naming ``label`` and ``path`` when ``path`` cannot be created: a parent is
    a file, or no file can be made in the nearest existing folder (``path`` itself when it is
    a folder; read-only, no permission, a pseudo file system like /proc): an empty probe file
    is made there and removed."""
    path = Path(path)
    places = [path.absolute()] if path.is_dir() else []  # an output folder that exists
    parent = next((p for p in (*places, *path.absolute().parents) if p.exists()), None)
    if parent is None:
        return
    named = f"{label} {path}" if label else str(path)
    if not parent.is_dir():
        raise InputError(f"{named}: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".recseg-probe-", dir=parent)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"{named}: cannot write in {parent} ({reason})") from None
    os.close(fd)
    os.unlink(probe)


def write_failure(exc: BaseException, path: str | Path) -> WriteFailure | None:
    """The OSError (``exc`` or one that led to it) saying that ``path``'s place cannot take
    the output, as a new OSError naming ``path``; None when the failure is something else."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in WRITE_ERRNOS:
            return WriteFailure(cause.errno, os.strerror(cause.errno), str(path))
        cause = cause.__cause__ or cause.__context__
    return None


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Re-raise a write failure inside as a ``WriteFailure`` naming ``path`` (not a temp
    file)."""
    try:
        yield
    except Exception as exc:
        failure = write_failure(exc, path)
        if failure is None:
            raise
        raise failure from exc


def message(exc: OSError) -> str:
    """One line: "no space left on device writing PATH" for a ``WriteFailure``, else
    "PATH: permission denied" (or the bare reason when no file is known)."""
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    text = text[:1].lower() + text[1:]
    if isinstance(exc, WriteFailure):
        return f"{text} writing {exc.filename}"
    return f"{exc.filename}: {text}" if exc.filename else text
