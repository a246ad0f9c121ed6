"""Lab fixtures: a leftovers check that every lab test passes through."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from vhtune.lab import hygiene


@pytest.fixture
def no_leftovers(require_root: None) -> Iterator[None]:
    """Fails the test when it leaves a lab netns, link, socket, hugepage file or child process behind."""
    # Only this process's names: other engineers' lab runs on the same host come and go meanwhile.
    before = hygiene.snapshot(os.getpid(), own_only=True)
    yield
    after = hygiene.snapshot(os.getpid(), own_only=True)
    new = {k: sorted(set(after[k]) - set(before[k])) for k in after}
    assert not any(new.values()), f"left behind: {new}"
