"""Signals that reach the agent between two segments (the recorder's handlers are not installed then): a
reload or a stop then must not kill it with the default action."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

# The agent with a stand-in recorder (same signal handling as the real one, no probes) and a retention step
# that receives the signal, as `systemctl reload` / `systemctl stop` can land while a segment is retired.
SCRIPT = """
import os, signal, sys
from pathlib import Path
from vhtune.agent import run as R
from vhtune.agent.config import AgentConfig
from vhtune.record.recorder import Summary, _signals, _Stop

runs = []
MODE = sys.argv[3]

class FakeRecorder:
    def __init__(self, opts, on_interval=None):
        self.stop, self.summary = _Stop(), Summary(out=str(opts.out))

    def run(self):
        with _signals(self.stop):
            runs.append(1)
            if len(runs) > 3:
                os._exit(3)  # a stop was lost: the agent would go on recording
            if MODE == "reload-then-stop":  # systemctl reload, then systemctl stop while the segment ends
                os.kill(os.getpid(), signal.SIGHUP)
                os.kill(os.getpid(), signal.SIGTERM)
            self.stop.event.wait(0.2)
        self.summary.stop_reason = self.stop.reason or "duration"
        return self.summary

def enforce(root, retention, current=None):
    if MODE == "between":
        os.kill(os.getpid(), {1: signal.SIGHUP, 2: signal.SIGTERM}.get(len(runs), 0))

R.Recorder, R.enforce = FakeRecorder, enforce
a = R.Agent(AgentConfig(listen="127.0.0.1:" + sys.argv[1], record_dir=Path(sys.argv[2])))
a.run()
print(a.stop_reason, a.segments_done, len(runs))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _agent(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(_free_port()), str(tmp_path / "rec"), mode],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_reload_and_stop_between_segments(tmp_path: Path) -> None:
    res = _agent(tmp_path, "between")
    assert res.returncode == 0, (res.returncode, res.stderr)
    # SIGHUP after segment 1: reloaded, segment 2 ran; SIGTERM after segment 2: stopped, no third segment.
    assert res.stdout.split() == ["SIGTERM", "2", "2"], res.stdout


def test_stop_after_a_reload_in_the_same_segment_is_not_lost(tmp_path: Path) -> None:
    res = _agent(tmp_path, "reload-then-stop")
    assert res.returncode == 0, (res.returncode, res.stderr)
    assert res.stdout.split() == ["SIGTERM", "1", "1"], res.stdout
