"""Suite-wide fixtures. The suite runs as root on a host prepared by `make setup` (CI does exactly that)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def require_root() -> None:
    # CI runs as root; this only guards a developer running pytest unprivileged by mistake.
    if os.geteuid() != 0:
        pytest.fail("this test needs root (CI and `make test` run as root)")
