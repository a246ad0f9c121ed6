"""Run ``vhtune backend`` as a child process (for the lab, benchmarks and tests) and talk to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from vhtune.backend.control_client import ControlClient
from vhtune.errors import LabError


class BackendProcess:
    """``python -m vhtune.backend`` (lean) or ``python -m vhtune backend`` (full CLI) with a control socket.

    Stopped with SIGTERM (clean shutdown, exit report on stdout) by :meth:`stop`; SIGKILL after 15 s.
    """

    def __init__(self, workdir: Path, port: str = "sink", *args: str, lean: bool = True) -> None:
        self.sock = str(workdir / "vu.sock")
        self.ctl = str(workdir / "ctl.sock")
        self.log = workdir / "backend.log"
        entry = ["vhtune.backend"] if lean else ["vhtune", "backend"]
        argv = [sys.executable, "-m", *entry, "--socket", self.sock, "--port", port]
        argv += ["--control", self.ctl, "--json", *args]
        self._logf: IO[str] = open(self.log, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._logf, text=True)
        self.control = ControlClient(self.ctl)
        deadline = time.monotonic() + 15
        client = "--connect" in args  # then the front-end owns the vhost-user socket
        while not ((client or os.path.exists(self.sock)) and os.path.exists(self.ctl)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LabError(f"vhtune backend did not start: {self.log.read_text()[-500:]}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fds(self) -> set[str]:
        return set(os.listdir(f"/proc/{self.pid}/fd"))

    def stop(self) -> str:
        """SIGTERM and wait; returns the exit report (JSON on stdout)."""
        out = ""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                out, _ = self.proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate()
        elif self.proc.stdout:
            out = self.proc.stdout.read()
            self.proc.stdout.close()
        self._logf.close()
        return out

    def __enter__(self) -> BackendProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
