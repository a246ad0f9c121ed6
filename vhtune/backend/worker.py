"""One thread per running virtqueue, named ``vhtune-q<N>`` in the kernel (comm), so sched tracepoints and
``discover`` see it like a vhost worker. It processes bursts, busy-polls for a while when idle, then enables
notifications and sleeps in poll() on the kick eventfd (or the tap fd for RX)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import threading
import time
from collections.abc import Callable

from vhtune.backend.datapath import QueuePath

log = logging.getLogger("vhtune.backend")
PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)


def set_comm(name: str) -> None:
    """Set the calling thread's kernel comm (16 bytes incl. NUL), what /proc/PID/task/TID/comm shows."""
    _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


class Worker(threading.Thread):
    """Runs ``path`` until :meth:`stop`. kind: ``tx`` (driver→port), ``gen`` or ``tap`` (port→driver)."""

    def __init__(self, path: QueuePath, kind: str) -> None:
        super().__init__(name=f"vhtune-q{path.vq.index}", daemon=True)
        self.path = path
        self.kind = kind
        self.tid: int | None = None
        self._stop_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._stopping = False
        self._cpus: list[int] | None = None
        self.error: str | None = None
        self._started_evt = threading.Event()

    def start(self) -> None:
        super().start()
        self._started_evt.wait(5)

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            os.eventfd_write(self._stop_fd, 1)
        self.join(10)
        if self.is_alive():
            log.error("worker %s did not stop within 10 s", self.name)
        else:
            os.close(self._stop_fd)

    def _affinity(self) -> None:
        cpus = self.path.tun.cpus_for(self.path.vq.index)
        if cpus != self._cpus:
            self._cpus = list(cpus)
            try:
                os.sched_setaffinity(0, cpus or range(os.cpu_count() or 1))
            except OSError as e:
                log.error("worker %s: cannot set CPU affinity %s: %s", self.name, cpus, e.strerror)

    def run(self) -> None:
        set_comm(self.name)
        self.tid = threading.get_native_id()
        self._started_evt.set()
        try:
            self._loop()
        except Exception as e:  # a bug must stop this queue, not the daemon
            self.error = repr(e)
            log.exception("worker %s crashed", self.name)

    def _step(self) -> Callable[[int], int]:
        p = self.path
        return {"tx": p.tx_step, "gen": p.gen_step, "tap": p.tap_rx_step}[self.kind]

    def _loop(self) -> None:
        p, vq, tun = self.path, self.path.vq, self.path.tun
        step = self._step()
        poller = select.poll()
        poller.register(self._stop_fd, select.POLLIN)
        registered: set[int] = set()
        vq.kicks_off()
        while not self._stopping:
            self._affinity()
            if not p.running:  # broken queue or dead port: sleep until stopped, on the stop fd alone
                for fd in registered:
                    poller.unregister(fd)
                registered.clear()
                poller.poll(None)
                continue
            if step(tun.burst):
                continue
            if tun.busy_poll_us and self._busy_poll(tun.busy_poll_us):
                continue
            with p.lock:
                p.flush_calls()
            if p.peer is not None:
                with p.peer.lock:
                    p.peer.flush_calls()
            wait_fd, arm = self._wait_target()
            if arm and vq.kicks_on(p.seen_avail()):
                vq.kicks_off()
                continue
            for fd in registered - {wait_fd}:
                poller.unregister(fd)
                registered.discard(fd)
            if wait_fd is not None and wait_fd not in registered:
                poller.register(wait_fd, select.POLLIN)
                registered.add(wait_fd)
            # No fd (SET_VRING_KICK with the no-fd bit): poll the ring every millisecond.
            events = poller.poll(None if wait_fd is not None else 1)
            p.stats.wakeups += 1
            for fd, ev in events:
                if fd == wait_fd and fd == vq.kick_fd:
                    if ev & (select.POLLERR | select.POLLNVAL):
                        p.running = False
                        log.error("%s: kick fd %d is unusable; queue stopped", vq.name, fd)
                        continue
                    with contextlib.suppress(BlockingIOError):
                        p.stats.kicks += os.eventfd_read(fd)
                elif fd == wait_fd and fd == p.io.fd and ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    # A deleted tap leaves its queue fd in permanent POLLERR: stop instead of spinning.
                    p.running = False
                    p.drop("tap_error", f"{vq.name}: tap queue fd {fd} failed (interface deleted?); RX stopped")
            if arm:
                vq.kicks_off()

    def _wait_target(self) -> tuple[int | None, bool]:
        """Which fd to sleep on and whether to ask the driver for kicks first."""
        p, vq = self.path, self.path.vq
        if self.kind == "tap":
            try:
                room = vq.pending()
            except Exception:
                room = 0
            if room or p.tun.rx_refill == "drop":
                return p.io.fd, False
        return vq.kick_fd, True

    def _busy_poll(self, us: int) -> bool:
        """Spin on avail.idx (ring-driven queues only). The tap RX side never spins: polling the tap fd
        means a syscall per spin, each a GIL hand-off that stalls the TX worker of the same pair (measured:
        tap pps fell 3x with a 50 µs spin)."""
        if self.kind == "tap":
            return False
        vq = self.path.vq
        seen = self.path.seen_avail()
        deadline = time.monotonic_ns() + us * 1000
        while time.monotonic_ns() < deadline and not self._stopping:
            if int(vq.avail_idx[0]) != seen:
                return True
        return False
