"""Run a real lab scenario with a real recording, plus the vhtune back-end's own counters.

The lab's ``--record`` starts ``vhtune record -p PID…``; this harness starts the same recorder and also gives it
the back-end's control socket (``--control``: kick/call eventfd roles) and samples the back-end's per-queue
counters into the recording's ``backend_queues`` table (vhtune/analysis/backend_counters.py).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vhtune.analysis.backend_counters import BackendCounterRecorder
from vhtune.lab import scenarios
from vhtune.lab.proc import LabProcess
from vhtune.lab.record_hook import RecordHook


def control_of(pid: int) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for i, a in enumerate(argv[:-1]):
        if a == b"--control":
            return argv[i + 1].decode()
    return None


class CountingHook(RecordHook):
    def __init__(self, out: Path | None) -> None:
        super().__init__(out)
        self.counters: BackendCounterRecorder | None = None

    def start(self, pids: list[int], duration: float) -> None:
        if self.out is None or not pids:
            return
        controls = [c for p in pids if (c := control_of(p))]
        argv = [sys.executable, "-m", "vhtune", "record", "-o", str(self.out), "--json"]
        argv += ["--duration", f"{duration:g}", "--interval", "0.5"]
        for p in pids:
            argv += ["-p", str(p)]
        for c in controls:
            argv += ["--control", c]
        self.proc = LabProcess(argv, log=self.out.parent / f".{self.out.name}.record.log", name="vhtune record")
        if controls:
            self.counters = BackendCounterRecorder(self.out, controls, interval=0.5)
            self.counters.start()
        # Traffic starts when this returns: wait until the probes are attached, so the recording covers it.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.alive():
            try:
                if "probes" in json.loads((self.out / "manifest.json").read_text()):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"vhtune record did not attach its probes: {self.proc.tail(5)}")

    def stop(self) -> dict[str, Any] | None:
        out = super().stop()
        if self.counters is not None:
            self.counters.stop()
            self.counters = None
        return out


def run_recorded(
    monkeypatch: pytest.MonkeyPatch, name: str, out: Path, faults: list[str], duration: float = 4.0, **kw: Any
) -> dict[str, Any]:
    monkeypatch.setattr(scenarios, "RecordHook", CountingHook)
    summary = scenarios.run(name, scenarios.RunOptions(duration=duration, faults=faults, record=out, **kw))
    rec = summary.get("recording") or {}
    # The recorder's exit code is its own business (a failed detach at exit is reported as non-zero);
    # what matters here is that it attached, recorded and flushed: the manifest says so.
    manifest = json.loads((out / "manifest.json").read_text())
    assert "probes" in manifest and manifest.get("flushes", 0) >= 2, f"the recorder failed: {rec}"
    summary["recorder_exit_code"] = rec.get("exit_code")
    return summary
