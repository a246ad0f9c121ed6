"""LabProcess.stop: the whole process group is gone afterwards, not only its leader."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil
import pytest

from vhtune.lab import proc


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_kills_group_members_that_outlive_the_leader(require_root: None) -> None:
    # The leader dies of SIGTERM; its child ignores SIGTERM and would run on for a minute.
    p = proc.LabProcess(["sh", "-c", "(trap '' TERM; exec sleep 60) & echo $!; wait"], stdout_pipe=True)
    assert p.popen.stdout is not None
    straggler = int(p.popen.stdout.readline())
    try:
        # Until the straggler has exec'd sleep (SIGTERM ignored from then on).
        deadline = time.monotonic() + 5.0
        while psutil.Process(straggler).cmdline()[:1] != ["sleep"] and time.monotonic() < deadline:
            time.sleep(0.02)
        p.stop(timeout=5.0)
        assert p.popen.returncode == -signal.SIGTERM
        deadline = time.monotonic() + 5.0
        while not _gone(straggler) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(straggler), f"pid {straggler} of the stopped group still runs"
    finally:
        with contextlib.suppress(ProcessLookupError):
            if not _gone(straggler):
                os.kill(straggler, signal.SIGKILL)


def test_a_leader_found_dead_takes_its_group_along_before_it_is_reaped(
    require_root: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once the leader is reaped its pid, the group's id, may be handed out again: a group SIGKILL sent by stop()
    # after that could reach an unrelated group. So the stragglers go when the leader is found dead, before the
    # reap, and stop() then sends nothing.
    p = proc.LabProcess(["sh", "-c", "sleep 60 & echo $!"], stdout_pipe=True)
    assert p.popen.stdout is not None
    straggler = int(p.popen.stdout.readline())
    try:
        deadline = time.monotonic() + 5.0
        while p.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert p.popen.returncode == 0
        deadline = time.monotonic() + 5.0
        while not _gone(straggler) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(straggler), f"pid {straggler} of the exited leader's group still runs"
        sent: list[int] = []
        monkeypatch.setattr(p, "signal_group", sent.append)
        p.stop()
        assert sent == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            if not _gone(straggler):
                os.kill(straggler, signal.SIGKILL)
