"""Child processes the lab starts: own session, output to a file, stopped by their own pid only.

Every peer (testpmd, QEMU, iperf3, a back-end) runs as a ``LabProcess``; ``stop()`` sends SIGTERM to the
child's process group, waits, then SIGKILLs it. A ``ProcessGroup`` stops all of its members in reverse order
on exit, also when the body raised.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from vhtune.errors import CapabilityError, LabError


def run(argv: Sequence[str], *, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short command; failures become one ``LabError`` naming the command and its stderr."""
    try:
        cp = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise CapabilityError(f"{argv[0]} is not installed", hint="run `make setup`") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:g} s") from exc
    if check and cp.returncode != 0:
        err = (cp.stderr or cp.stdout).strip().splitlines()
        raise LabError(f"`{' '.join(argv)}` failed: {err[-1] if err else f'exit {cp.returncode}'}")
    return cp


class LabProcess:
    """One started child; its stdout+stderr go to ``log`` (a file) unless a pipe is asked for."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        stdin_pipe: bool = False,
        stdout_pipe: bool = False,
        env: dict[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.name = name or Path(self.argv[0]).name
        self.log = log
        self._logf: IO[bytes] | None = open(log, "wb") if log is not None else None  # noqa: SIM115
        out: int | IO[bytes] = subprocess.PIPE if stdout_pipe else (self._logf if self._logf else subprocess.DEVNULL)
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if (self._logf or stdout_pipe) else subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        except FileNotFoundError as exc:
            self._close_log()
            raise CapabilityError(f"{self.argv[0]} is not installed", hint="run `make setup`") from exc
        self.pid = self.popen.pid

    def alive(self) -> bool:
        if self.popen.returncode is not None or self._exited(0.0):
            self._reap()
            return False
        return True

    def wait(self, timeout: float) -> int | None:
        """The exit code once the child has exited (within ``timeout``), else None."""
        if self.popen.returncode is None and not self._exited(timeout):
            return None
        return self._reap()

    def _reap(self) -> int | None:
        """Collect an exited leader. What is left of its group goes first, while the leader's pid (which names
        the group) is still reserved: after the reap the kernel may hand that number to an unrelated process
        group, and a group signal sent then would reach it."""
        if self.popen.returncode is None:
            self.signal_group(signal.SIGKILL)
        return self.popen.wait()

    def _exited(self, timeout: float) -> bool:
        """Whether the child exited within ``timeout``, without reaping it (``WNOWAIT``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return True
            except ChildProcessError:  # reaped already
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def output(self) -> str:
        """What the child wrote to its log file so far."""
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 5) -> str:
        return " | ".join(self.output().strip().splitlines()[-lines:])

    def signal_group(self, sig: int) -> None:
        # The child leads its own session (start_new_session), so its pgid is its pid: this reaches the
        # child and anything it forked (e.g. `ip netns exec` → testpmd) and nothing else.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
        """Ask nicely, then SIGKILL the group after ``timeout``; returns the exit code."""
        if self.popen.returncode is None:
            if not self._exited(0.0):
                self.signal_group(sig)
                if not self._exited(timeout):
                    self.signal_group(signal.SIGKILL)
                    self._exited(5.0)
            # Members of the group that outlive the leader (a child that ignores SIGTERM) go too, before the
            # leader is reaped (see _reap).
            self.wait(5.0)
        # An already reaped leader's group was emptied by _reap: no group signal by a number that may be reused.
        for f in (self.popen.stdin, self.popen.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        self._close_log()
        return self.popen.returncode

    def _close_log(self) -> None:
        if self._logf is not None:
            self._logf.close()
            self._logf = None

    def __enter__(self) -> LabProcess:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def wait_for(pred: Callable[[], object], timeout: float, what: str, proc: LabProcess | None = None) -> None:
    """Poll ``pred()`` every 50 ms until true; ``LabError`` on timeout or when ``proc`` died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if proc is not None and not proc.alive():
            raise LabError(f"{proc.name} exited (code {proc.popen.returncode}) before {what}: {proc.tail()}")
        if time.monotonic() > deadline:
            tail = f": {proc.tail()}" if proc is not None else ""
            raise LabError(f"timed out after {timeout:g} s waiting for {what}{tail}")
        time.sleep(0.05)
