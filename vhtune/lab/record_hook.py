"""``--record DIR``: run ``vhtune record`` alongside a scenario, watching the scenario's processes."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from vhtune.lab.proc import LabProcess

ATTACH_TIMEOUT_S = 30.0
# The scenario stops the recorder with SIGINT once its traffic is over (after the drain); --duration only bounds
# it should the scenario die. Without a margin the recorder's own deadline, counted from its attach, could end
# it before the traffic that started a moment after the attach.
DURATION_MARGIN_S = 10.0


class RecordHook:
    """Starts ``python -m vhtune record -o DIR -p PID… --duration S --json`` once the peers run; stops it
    with SIGINT (the recorder's clean stop) when the scenario's traffic is over."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.proc: LabProcess | None = None
        self.attached_after_s: float | None = None

    def start(self, pids: list[int], duration: float) -> None:
        if self.out is None or not pids:
            return
        argv = [sys.executable, "-m", "vhtune", "record", "-o", str(self.out), "--json"]
        argv += ["--duration", f"{duration + DURATION_MARGIN_S:g}", "--interval", "0.5"]
        for p in pids:
            argv += ["-p", str(p)]
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = LabProcess(argv, log=self.out.parent / f".{self.out.name}.record.log", name="vhtune record")
        self.attached_after_s = self._wait_attached()

    def _wait_attached(self) -> float | None:
        """Traffic must not start before the probes are attached: the recorder writes ``probes`` into its
        manifest right after attaching (first flush)."""
        assert self.out is not None and self.proc is not None
        t0 = time.monotonic()
        man = self.out / "manifest.json"
        while time.monotonic() - t0 < ATTACH_TIMEOUT_S and self.proc.alive():
            with contextlib.suppress(OSError, json.JSONDecodeError):
                if "probes" in json.loads(man.read_text()):
                    return round(time.monotonic() - t0, 2)
            time.sleep(0.1)
        return None

    def stop(self) -> dict[str, Any] | None:
        if self.proc is None or self.out is None:
            return None
        rc = self.proc.wait(0.0) if not self.proc.alive() else None
        if rc is None:
            self.proc.stop(timeout=15.0, sig=signal.SIGINT)
            rc = self.proc.popen.returncode
        tail = self.proc.tail(3)
        log = self.proc.log
        if log is not None:
            log.unlink(missing_ok=True)
        self.proc = None
        return {
            "dir": str(self.out),
            "exit_code": rc,
            "attached_after_s": self.attached_after_s,
            "tail": tail if rc else "",
        }
