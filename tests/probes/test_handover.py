"""The compile hand-over's parent side when the child process does not play its part."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from vhtune.errors import ProbeError
from vhtune.probes import ProbeConfig, handover


def test_a_child_gone_before_it_read_the_request_is_a_probe_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A group signal (systemd's stop, a terminal hang-up) can kill the child before its interpreter has read the
    # request: the parent's send then fails with EPIPE. That is the same failure as a child dying mid-reply,
    # a ProbeError with its exit code, not a BrokenPipeError (which click turned into a silent exit 1).
    real_popen = subprocess.Popen

    def gone_at_once(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(["/bin/sh", "-c", "exit 7"], **kw)  # holds the socket end, then exits unread
        proc.wait(timeout=10)
        return proc

    monkeypatch.setattr(handover.subprocess, "Popen", gone_at_once)
    with pytest.raises(ProbeError, match=r"the probe compiler process exited with code 7 and said nothing"):
        handover.load_in_child(["sched"], ProbeConfig(), ncpus=2)
