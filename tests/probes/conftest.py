"""One compiled probe module per test session (compiling costs ~0.5-1.5 s); each test gets fresh maps."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.discover.conftest import tap_in_unnamed_netns  # noqa: F401  (a tap in a netns with no /run/netns name)
from vhtune.probes import ProbeMaps, Probes, TargetSet, load


@pytest.fixture(scope="session")
def probes(require_root: None) -> Iterator[Probes]:
    p = load()
    try:
        yield p
    finally:
        p.close()


@contextlib.contextmanager
def fresh_maps(probes: Probes) -> Iterator[ProbeMaps]:
    """Maps of ``probes`` with nothing watched and nothing left from earlier tests; targets let go after."""
    m = ProbeMaps(probes)
    m.read()  # clears hash maps left by earlier tests
    try:
        yield m
    finally:
        m.apply(TargetSet())


@pytest.fixture
def maps(probes: Probes) -> Iterator[ProbeMaps]:
    with fresh_maps(probes) as m:
        yield m
