"""Atomic file writes: a reader sees the previous file or the complete new one, never a part.

The data goes to a uniquely named temporary file in the target's directory (``mkstemp``: no two
writers share it), is flushed and fsynced, gets its final mode, and is renamed over the target
(``os.replace``, atomic on POSIX); the directory is fsynced so the rename survives a crash. On any
error the temporary file is removed and the target is left as it was.

The mode is explicit at every call: ``0o600`` for files holding secrets (database passwords) and
for everything below STREAMFLOW_HOME (private to its user: docs/security.md), ``0o644`` for files
meant to be shared (the provisioned dashboard in the repository).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

SECRET_MODE = 0o600
PRIVATE_MODE = 0o600  # no secret, but below STREAMFLOW_HOME: its user's only
PUBLIC_MODE = 0o644


def atomic_write(path: Path, writer: Callable[[str], object], *, mode: int) -> None:
    """Have ``writer`` write the temporary file (its path as a string), then put it in place.

    For libraries that insist on writing to a filename themselves (e.g. Evidently's
    ``save_html``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` atomically with file mode ``mode``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, *, mode: int, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically with file mode ``mode``."""
    atomic_write_bytes(path, text.encode(encoding), mode=mode)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse to open/fsync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
