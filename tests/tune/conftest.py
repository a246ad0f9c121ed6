"""Tuning tests act on real threads, real sysctls, a real module parameter and a real tap in a netns.

Each fixture restores what it found, also when the test fails, so the host is left as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.discover.conftest import start_paused_qemu, vcpu0_tid
from vhtune.discover.model import ROLE_BACKEND, Snapshot, TapInfo, ThreadInfo

# A stand-in back-end: one worker thread named like vhtune's own (kernel comm set with prctl PR_SET_NAME).
WORKER = r"""
import ctypes, threading, time
def work():
    ctypes.CDLL(None).prctl(15, b"vhtune-q0", 0, 0, 0)
    time.sleep(60)
t = threading.Thread(target=work); t.start()
print(threading.get_native_id() if False else "", flush=True)
time.sleep(0.2)
print(t.native_id, flush=True)
t.join()
"""


@pytest.fixture
def state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VHTUNE_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state" / "tune"


@pytest.fixture
def worker() -> Iterator[tuple[int, int]]:
    """(pid, tid) of a real process with a `vhtune-q0` thread; killed afterwards."""
    proc = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        tid = int(proc.stdout.readline())
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/task/{tid}/comm").read_text().strip() != "vhtune-q0":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield proc.pid, tid
    finally:
        proc.kill()
        proc.wait()


def snapshot_with(threads: list[ThreadInfo] = (), taps: list[TapInfo] = ()) -> Snapshot:  # type: ignore[assignment]
    return Snapshot(
        taken_at=time.time(), hostname="test", kernel=os.uname().release, threads=list(threads), taps=list(taps)
    )


def backend_thread(pid: int, tid: int) -> ThreadInfo:
    return ThreadInfo(pid=pid, tid=tid, comm="vhtune-q0", role=ROLE_BACKEND)


@pytest.fixture
def paused_vm(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(pid, vCPU tid) of a real QEMU (TCG, paused: -S) with named threads; killed afterwards."""
    proc = start_paused_qemu(f"vhtune-tune-{os.getpid()}", "64")
    try:
        yield proc.pid, vcpu0_tid(proc)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def restore_files() -> Iterator[list[Path]]:
    """Files (sysctls, module params) whose content is put back after the test whatever happens."""
    paths: list[Path] = []
    saved: dict[Path, str] = {}

    class Tracker(list[Path]):
        def append(self, p: Path) -> None:
            saved[p] = p.read_text()
            super().append(p)

    tracker = Tracker()
    yield tracker
    for p, text in saved.items():
        p.write_text(text)
    del paths


# The head of a child script that applies a plan and SIGKILLs itself right after the knob named DIE_ON wrote
# its value, before the journal could record it as applied: engine.make_knob hands out knobs whose apply kills.
# The script goes on to build `snap` and `plan` and call apply_plan(plan, lambda: snap).
DIE_AFTER_APPLY = r"""
import os, signal, sys, time
import vhtune.tune.engine as engine
from vhtune.discover.model import Snapshot, ThreadInfo
from vhtune.tune.engine import Request, apply_plan, make_plan
from vhtune.tune.knob import Target

_make_knob = engine.make_knob
def _dying_knob(name, target):
    knob = _make_knob(name, target)
    if name == DIE_ON:
        real = knob.apply
        def apply_then_die(value):
            real(value)
            os.kill(os.getpid(), signal.SIGKILL)
        knob.apply = apply_then_die
    return knob
engine.make_knob = _dying_knob
"""


def run_dying_child(child: str, *args: object) -> str:
    """Run a DIE_AFTER_APPLY script with ``args``; it must have been SIGKILLed mid-apply. Returns its plan id."""
    proc = subprocess.run(
        [sys.executable, "-c", child, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=30,
        env=os.environ.copy(),
    )
    assert proc.returncode == -9, proc.stderr
    return proc.stdout.split()[0]
