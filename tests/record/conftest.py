"""Small real file systems for the recording tests (a tiny tmpfs: disk full; a read-only one) and a recorder
running in a thread or as a `vhtune record` process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Child
from vhtune.errors import RecordingError
from vhtune.record import read_manifest


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


def wait_flushes(
    out: Path, n: int, running: Callable[[], bool], why: Callable[[], object], timeout: float
) -> dict[str, Any]:
    """Wait until the recording in ``out`` has ``n`` flushes (the first comes right after the probes attached)
    while the recorder is ``running()`` (else fail with ``why()``); the manifest read then."""
    deadline = time.monotonic() + timeout
    while True:
        assert running(), why()
        try:
            manifest = read_manifest(out)
            if int(manifest["flushes"]) >= n:
                return manifest
        except RecordingError:  # not written yet
            pass
        assert time.monotonic() < deadline, f"recording did not reach {n} flushes in {timeout:g} s"
        time.sleep(0.05)


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
        self._thread.start()
        wait_flushes(self.out, 1, self._thread.is_alive, lambda: self.result, timeout)

    def join(self, timeout: float = 30.0) -> None:
        self._thread.join(timeout=timeout)


def record_argv(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "vhtune", "record", "-o", str(out), *args]


def run_record(out: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`vhtune record -o OUT ARGS` run to its end, its output captured."""
    return subprocess.run(record_argv(out, *args), capture_output=True, text=True, timeout=timeout)


class RecordProcess(Child):
    """`vhtune record -o OUT ARGS` started as a process (the CLI end to end), stdout and stderr piped; leaving its
    ``with`` block kills it if it still runs."""

    def __init__(self, out: Path, *args: str) -> None:
        self.out = out
        super().__init__(record_argv(out, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait_flushes(self, n: int = 1, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the ``n``-th flush (the first: attached) while the process runs; the manifest then."""
        return wait_flushes(self.out, n, lambda: self.poll() is None, self._stderr, timeout)

    def _stderr(self) -> str:
        return self.stderr.read() if self.stderr else ""
