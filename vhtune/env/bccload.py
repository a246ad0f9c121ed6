"""Importing the distro's bcc and running a load with libbpf/bcc chatter captured.

bcc is Debian's python3-bpfcc (PyPI's "bcc" is an unrelated project); the venv sees it through a .pth file
limited to that one package. Loader failures are printed by libbpf on fd 2, so loads run with fd 2 captured
and the captured text becomes part of the error.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from types import ModuleType

from vhtune.errors import CapabilityError

BCC_HINT = "install Debian's python3-bpfcc and recreate the venv (`make setup`)"


def import_bcc() -> ModuleType:
    try:
        import bcc
    except ImportError as exc:
        raise CapabilityError(f"bcc is not importable ({exc})", BCC_HINT) from None
    return bcc


def bcc_version() -> str | None:
    try:
        from bcc.version import __version__ as v
    except ImportError:
        return None
    return str(v)


class CapturedStderr:
    text: str = ""


@contextlib.contextmanager
def captured_stderr() -> Iterator[CapturedStderr]:
    """Redirect fd 2 (C-level stderr, where libbpf and clang print) into a buffer for the block."""
    out = CapturedStderr()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.text = tmp.read().decode(errors="replace")


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""
