"""A recording on disk: ``manifest.json`` plus ``<table>/NNNNNN.parquet`` chunks.

Crash safety: a chunk is written to ``*.tmp``, fsynced, renamed into place and the directory fsynced; the
manifest is replaced the same way after every flush. A SIGKILL therefore loses only rows not yet flushed,
and a reader never sees a half-written chunk (``*.tmp`` files are ignored). A failed write (disk full,
permissions) removes its temporary file and raises RecordingError; everything flushed before stays valid.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vhtune import __version__
from vhtune.cli.output import to_jsonable
from vhtune.errors import RecordingError
from vhtune.fsutil import NotDurableError, atomic_write, make_dir_durable
from vhtune.record.frames import write_chunk
from vhtune.schema import MANIFEST_NAME, RECORDING_FORMAT, SCHEMA_VERSION, TABLES

CHUNK_SUFFIX = ".parquet"


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied" if exc.errno != errno.EROFS else "the file system is read-only"
    return exc.strerror or str(exc)


class RecordingWriter:
    """Buffers rows per table; ``flush()`` turns them into one chunk per table and updates the manifest."""

    def __init__(self, directory: Path, manifest: dict[str, Any]) -> None:
        self.dir = Path(directory)
        self.buffers: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
        self.seq = 0
        self.rows_written: dict[str, int] = dict.fromkeys(TABLES, 0)
        self.manifest: dict[str, Any] = {
            "format": RECORDING_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "vhtune_version": __version__,
            "started_at": time.time(),
            "ended_at": None,
            "complete": False,
            "stop_reason": None,
            "flushes": 0,
            "last_flush_at": None,
            "tables": {name: TABLES[name].names for name in TABLES},
            "changes": [],
            **manifest,
        }
        self._open()

    def _open(self) -> None:
        try:
            make_dir_durable(self.dir)
        except OSError as exc:
            raise RecordingError(
                f"cannot create the recording directory {self.dir}: {_why(exc)}",
                hint="choose a writable directory with -o",
            ) from None
        if not self.dir.is_dir():
            raise RecordingError(f"{self.dir} exists and is not a directory", hint="choose another -o")
        if (self.dir / MANIFEST_NAME).exists():
            raise RecordingError(
                f"{self.dir} already holds a recording", hint="choose a new directory with -o or remove it"
            )
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise RecordingError(f"cannot write to {self.dir}: permission denied", hint="choose a writable -o")
        self._write_manifest()

    # --- rows -------------------------------------------------------------------------------------------
    def add(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        self.buffers[table].extend(rows)

    def note_change(self, at: float, added: list[str], removed: list[str], skipped: list[str] | None = None) -> None:
        entry: dict[str, Any] = {"at": at, "added": added, "removed": removed}
        if skipped:
            entry["skipped"] = skipped
        self.manifest["changes"].append(entry)

    def pending_rows(self) -> int:
        return sum(len(r) for r in self.buffers.values())

    # --- disk -------------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write every non-empty buffer as the next chunk of its table, then the manifest."""
        self.seq += 1
        for name, rows in self.buffers.items():
            if not rows:
                continue
            path = self.dir / name / f"{self.seq:06d}{CHUNK_SUFFIX}"
            try:
                write_chunk(path, TABLES[name], rows)
            except NotDurableError as exc:
                # The chunk is in place and will be read: count its rows, never write them again.
                self.rows_written[name] += len(rows)
                rows.clear()
                raise RecordingError(
                    f"syncing {path.parent} after writing {path.name} failed: {_why(exc)}; the chunk is in place, "
                    "but a power loss may lose it",
                    hint="check the disk (dmesg), or choose another -o",
                ) from None
            except OSError as exc:
                raise RecordingError(
                    f"writing {path} failed: {_why(exc)}; the {self.flushed_desc()} already written stay readable",
                    hint="free space or choose another -o",
                ) from None
            self.rows_written[name] += len(rows)
            rows.clear()
        self.manifest["flushes"] = self.seq
        self.manifest["last_flush_at"] = time.time()
        self._write_manifest()

    def flushed_desc(self) -> str:
        return f"{sum(self.rows_written.values())} rows"

    def _write_manifest(self) -> None:
        self.manifest["rows"] = dict(self.rows_written)
        data = json.dumps(to_jsonable(self.manifest), indent=2).encode() + b"\n"
        try:
            atomic_write(self.dir / MANIFEST_NAME, data)
        except OSError as exc:
            raise RecordingError(
                f"writing {self.dir / MANIFEST_NAME} failed: {_why(exc)}; the previous manifest and the "
                f"{self.flushed_desc()} already written stay readable",
                hint="free space or choose another -o",
            ) from None

    def close(self, reason: str) -> None:
        """Flush what is buffered and mark the recording complete (called on a clean stop)."""
        try:
            self.flush()
        finally:
            self.manifest["ended_at"] = time.time()
            self.manifest["stop_reason"] = reason
            self.manifest["complete"] = True
            with contextlib.suppress(RecordingError):
                self._write_manifest()
