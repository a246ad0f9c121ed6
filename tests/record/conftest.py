"""Small real file systems for the recording tests: a tiny tmpfs (disk full) and a read-only one."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

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
