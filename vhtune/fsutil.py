"""Crash-safe file writes: readers see the old file or the new one, never a torn one, also after power loss."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class NotDurableError(OSError):
    """The new file is in place (readers see it), but fsync of its directory failed: power loss may still lose
    the rename. The caller must not write the same data again as if it were not there."""


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (the directory entry is data of the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir_durable(path: Path) -> None:
    """``mkdir -p path``; each directory it creates is fsynced into its parent, so a file renamed into ``path``
    and fsynced there cannot outlive ``path`` itself after power loss."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    for d in reversed(missing):
        with contextlib.suppress(PermissionError):  # a parent we may write but not read cannot be opened
            fsync_dir(d.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to ``path.tmp``, fsync, rename over ``path``, fsync the directory. The tmp file never survives.
    NotDurableError when only the last step failed (``path`` already holds ``data``)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    try:
        fsync_dir(path.parent)
    except OSError as exc:
        raise NotDurableError(exc.errno, exc.strerror) from exc
