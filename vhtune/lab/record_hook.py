"""``--record DIR``: run ``vhtune record`` alongside a scenario, watching the scenario's processes."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

from vhtune.lab.proc import LabProcess


class RecordHook:
    """Starts ``python -m vhtune record -o DIR -p PID… --duration S --json`` once the peers run; stops it
    with SIGINT (the recorder's clean stop) when the scenario's traffic is over."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.proc: LabProcess | None = None

    def start(self, pids: list[int], duration: float) -> None:
        if self.out is None or not pids:
            return
        argv = [sys.executable, "-m", "vhtune", "record", "-o", str(self.out), "--json"]
        argv += ["--duration", f"{duration:g}", "--interval", "0.5"]
        for p in pids:
            argv += ["-p", str(p)]
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = LabProcess(argv, log=self.out.parent / f".{self.out.name}.record.log", name="vhtune record")

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
        return {"dir": str(self.out), "exit_code": rc, "tail": tail if rc else ""}
