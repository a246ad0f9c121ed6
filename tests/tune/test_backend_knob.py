"""backend-tunable: a real `vhtune backend` changed live through its control socket, and restored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tune.conftest import snapshot_with
from vhtune.backend.proc import BackendProcess
from vhtune.discover.model import BackendInfo
from vhtune.errors import TuneError
from vhtune.tune.engine import Request, apply_plan, make_plan, rollback_plan, verify_plan
from vhtune.tune.knob import Target

pytestmark = pytest.mark.usefixtures("require_root")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[BackendProcess]:
    be = BackendProcess(tmp_path, "sink", "--burst", "4")
    try:
        yield be
    finally:
        be.stop()


def test_burst_apply_verify_rollback(backend: BackendProcess, state_root: Path) -> None:
    snap = snapshot_with()
    snap.backends.append(BackendInfo(pid=backend.pid, kind="vhtune", comm="python"))
    target = Target("backend", {"pid": backend.pid, "key": "burst"})
    plan = make_plan([Request("backend-tunable", target, 32)], snap)
    assert plan.changes[0].current == 4
    assert "UNIX-CONNECT:" + backend.ctl in plan.changes[0].command
    apply_plan(plan, lambda: snap)
    assert backend.control.tunables()["burst"] == 32
    assert all(r.ok for r in verify_plan(plan))
    rollback_plan(plan.id)
    assert backend.control.tunables()["burst"] == 4


def test_backend_refusal_is_one_sentence(backend: BackendProcess, state_root: Path) -> None:
    snap = snapshot_with()
    snap.backends.append(BackendInfo(pid=backend.pid, kind="vhtune", comm="python"))
    plan = make_plan([Request("backend-tunable", Target("backend", {"pid": backend.pid, "key": "burst"}), 9999)], snap)
    with pytest.raises(TuneError, match="refused burst=9999"):
        apply_plan(plan, lambda: snap)
    assert backend.control.tunables()["burst"] == 4


def test_undiscovered_backend_is_refused(backend: BackendProcess, state_root: Path) -> None:
    with pytest.raises(TuneError, match="was not discovered"):
        make_plan(
            [Request("backend-tunable", Target("backend", {"pid": backend.pid, "key": "burst"}), 8)], snapshot_with()
        )
