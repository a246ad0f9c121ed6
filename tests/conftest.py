"""Suite-wide fixtures. The suite runs as root on a host prepared by `make setup` (CI does exactly that)."""

from __future__ import annotations

import os
import subprocess
from types import TracebackType
from typing import Any

import pytest


class Child(subprocess.Popen[str]):
    """A process a test starts (text pipes): leaving its ``with`` block kills it by its own pid if it still runs,
    so a failing assertion never leaves it behind."""

    def __init__(self, argv: list[str], **kw: Any) -> None:
        super().__init__(argv, text=True, **kw)

    def __exit__(
        self, exc_type: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.poll() is None:
            self.kill()
            self.wait(timeout=10)
        super().__exit__(exc_type, value, traceback)


@pytest.fixture(scope="session")
def require_root() -> None:
    # CI runs as root; this only guards a developer running pytest unprivileged by mistake.
    if os.geteuid() != 0:
        pytest.fail("this test needs root (CI and `make test` run as root)")
