from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backend.frontend import Frontend
from vhtune.backend.control_client import ControlClient
from vhtune.backend.daemon import BackendConfig, Daemon
from vhtune.backend.ports import parse_port
from vhtune.backend.proc import BackendProcess
from vhtune.backend.stats import Tunables


def open_fds() -> set[int]:
    return {int(x) for x in os.listdir("/proc/self/fd")}


def wait_for(pred: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` seconds pass; its last answer, for an assert."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return bool(pred())


def eventfd_count(fd: int) -> int:
    """Read (and so reset) a non-blocking eventfd's counter; 0 when nothing was signalled."""
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


def thread_stat(tid: int) -> list[str]:
    """The fields of /proc/self/task/<tid>/stat after the comm: [0] the state, [11]+[12] utime+stime ticks."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def thread_cpu_ticks(tid: int) -> int:
    """User plus system CPU time of one of this process's threads, in clock ticks."""
    fields = thread_stat(tid)
    return int(fields[11]) + int(fields[12])


@dataclass
class Running:
    daemon: Daemon
    path: str
    control: ControlClient
    thread: threading.Thread

    def connect(self) -> Frontend:
        return Frontend.connect(self.path)

    @contextmanager
    def frontend(self, queues: Iterable[int] = (0, 1), num: int = 256) -> Iterator[Frontend]:
        """A connected front-end after the handshake with ``queues`` set up; closed on the way out."""
        with self.connect() as fe:
            fe.start(queues, num)
            yield fe

    def queue_stats(self, index: int) -> dict[str, Any]:
        """One virtqueue's entry of the control socket's stats."""
        queues: list[dict[str, Any]] = self.control.stats()["queues"]
        return queues[index]

    def stop(self) -> None:
        self.daemon.request_stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "daemon thread did not stop"

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_backend(tmp: Path, port: str = "sink", **tun: object) -> Running:
    qp = int(tun.pop("queue_pairs", 1))  # type: ignore[call-overload]
    t = Tunables(queue_pairs=qp)
    t.set(**tun)
    cfg = BackendConfig(socket=str(tmp / "vu.sock"), port=parse_port(port), control=str(tmp / "ctl.sock"), tunables=t)
    d = Daemon(cfg)
    th = threading.Thread(target=d.run, name="test-daemon", daemon=True)
    th.start()
    assert d.ready.wait(10)
    return Running(d, cfg.socket, ControlClient(str(tmp / "ctl.sock")), th)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # unix socket paths must stay under 108 bytes; pytest's tmp_path can be longer.
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"vhb{os.getpid()}-") as d:
        yield Path(d)


@pytest.fixture
def backend(short_tmp: Path) -> Iterator[Running]:
    with start_backend(short_tmp) as r:
        yield r


class BackendProc(BackendProcess):
    """The real CLI (``python -m vhtune backend``) unless lean=True (``python -m vhtune.backend``)."""

    def __init__(self, tmp: Path, port: str = "sink", *args: str, lean: bool = False) -> None:
        super().__init__(tmp, port, *args, lean=lean)
