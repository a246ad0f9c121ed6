"""Small real file systems for the recording tests (a tiny tmpfs: disk full; a read-only one) and a recorder
running in a thread."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _mount(path: Path, opts: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "vhrtmpfs", str(path)], check=True, timeout=20)


@pytest.fixture
def tiny_fs(tmp_path: Path, require_root: None) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    _mount(mnt, "size=192k")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, timeout=20)


@pytest.fixture
def readonly_fs(tmp_path: Path, require_root: None) -> Iterator[Path]:
    mnt = tmp_path / "ro"
    _mount(mnt, "size=64k,ro")  # read-only even for root: EROFS
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, timeout=20)


class RecorderThread:
    """A ``Recorder`` run in a thread (as `vhtune record` runs, minus the process): started attached, its
    summary or exception kept for the assertions."""

    def __init__(self, rec: Any, out: Path) -> None:
        self.out = out
        self.result: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(rec,))

    def _run(self, rec: Any) -> None:
        try:
            self.result["summary"] = rec.run()
        except BaseException as exc:  # surfaced by the test's assertion on .result
            self.result["error"] = exc

    def start_attached(self, timeout: float = 20.0) -> None:
        """Start, then wait for the first flush (right after the probes attached)."""
        from vhtune.record import read_manifest

        self._thread.start()
        deadline = time.monotonic() + timeout
        while not (self.out / "manifest.json").exists() or int(read_manifest(self.out)["flushes"]) < 1:
            assert time.monotonic() < deadline and self._thread.is_alive(), self.result
            time.sleep(0.05)

    def join(self, timeout: float = 30.0) -> None:
        self._thread.join(timeout=timeout)
