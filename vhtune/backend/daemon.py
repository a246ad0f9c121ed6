"""The back-end process: a socket (server or client), one front-end at a time, workers per running ring,
the control socket, signals and the exit report. Stats live per queue index for the daemon's whole life,
so they add up across reconnects."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from vhtune.backend import net
from vhtune.backend.connection import Conn, Listener, PeerClosed, connect
from vhtune.backend.control import ControlServer
from vhtune.backend.datapath import PortIO, QueuePath
from vhtune.backend.device import NetDevice
from vhtune.backend.ports import PortSpec, Tap
from vhtune.backend.stats import QueueStats, Tunables
from vhtune.backend.virtqueue import Virtqueue
from vhtune.backend.worker import Worker
from vhtune.errors import ProtocolError

log = logging.getLogger("vhtune.backend")


@dataclass
class BackendConfig:
    socket: str
    port: PortSpec
    client: bool = False
    control: str | None = None
    tunables: Tunables = field(default_factory=Tunables)
    max_connections: int | None = None  # stop after this many front-end sessions (tests, benches)


class Daemon:
    def __init__(self, cfg: BackendConfig) -> None:
        self.cfg = cfg
        self.tun = cfg.tunables
        n = 2 * self.tun.queue_pairs
        self.stats = [QueueStats() for _ in range(n)]
        self.paths: list[QueuePath | None] = [None] * n
        self.workers: dict[int, Worker] = {}
        self.device: NetDevice | None = None
        self.sessions = 0
        self.connected = False
        self._stop = False
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._lock = threading.Lock()
        self.tap: Tap | None = None
        self.listener: Listener | None = None
        self.control: ControlServer | None = None
        self.ready = threading.Event()

    # --- lifecycle ----------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _signal(self, signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        self.request_stop()

    def run(self) -> list[dict[str, Any]]:
        """Serve until a signal, request_stop() or max_connections; returns the final per-queue stats."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._signal)
            signal.signal(signal.SIGTERM, self._signal)
        try:
            if self.cfg.port.kind == "tap":
                self.tap = Tap(self.cfg.port.name, self.cfg.port.netns, self.tun.queue_pairs)
            if not self.cfg.client:
                self.listener = Listener(self.cfg.socket)
            if self.cfg.control:
                self.control = ControlServer(self.cfg.control, self._handlers())
                self.control.start()
            self.ready.set()
            while not self._stop:
                conn = self._next_conn()
                if conn is None:
                    break
                self._serve(conn)
                if self.cfg.max_connections and self.sessions >= self.cfg.max_connections:
                    break
        finally:
            self.ready.set()
            if self.control:
                self.control.close()
            if self.listener:
                self.listener.close()
            if self.tap:
                self.tap.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return self.queue_report()

    def _next_conn(self) -> Conn | None:
        if self.cfg.client:
            return connect(self.cfg.socket, lambda: self._stop)
        assert self.listener is not None
        while not self._stop:
            r, _, _ = select.select([self.listener.fileno(), self._wake_r], [], [])
            if self.listener.fileno() in r:
                return self.listener.accept()
        return None

    def _serve(self, conn: Conn) -> None:
        self.sessions += 1
        self.device = dev = NetDevice(self.tun.queue_pairs, self.tun.event_idx, hooks=self)
        self.connected = True
        log.info("front-end connected (session %d)", self.sessions)
        try:
            while not self._stop:
                r, _, _ = select.select([conn.fileno(), self._wake_r], [], [])
                if conn.fileno() not in r:
                    continue
                msg = conn.recv()
                reply = dev.handle(msg)
                if reply is not None:
                    conn.send(reply)
        except PeerClosed:
            log.info("front-end disconnected")
        except ProtocolError as e:
            log.error("vhost-user: %s; closing the connection", str(e))
        except OSError as e:
            log.error("vhost-user socket: %s; closing the connection", str(e.strerror or e))
        except Exception:  # a bug in a handler must cost this connection, not the daemon
            log.exception("vhost-user: internal error; closing the connection")
        finally:
            dev.close()
            conn.close()
            self.connected = False

    # --- ring hooks (called by NetDevice on the connection thread) ----------------------------------------
    def start(self, vq: Virtqueue) -> None:
        dev = self.device
        assert dev is not None
        i = vq.index
        pair = i // 2
        kind = self.cfg.port.kind
        io = PortIO(kind, self.tap.fds[pair] if self.tap else None, net.make_frame(self.cfg.port.size))
        mrg = dev.has(net.VIRTIO_NET_F_MRG_RXBUF)
        hdr_len = net.HDR_LEN if mrg or dev.has(net.VIRTIO_F_VERSION_1) else 10
        path = QueuePath(vq, self.stats[i], self.tun, io, hdr_len, mrg)
        path.mtu = dev.mtu
        with self._lock:
            self.paths[i] = path
            rx = self.paths[i - 1] if i % 2 else None
            if i % 2 and rx is not None and rx.running:
                path.peer = rx
            tx = self.paths[i + 1] if i % 2 == 0 else None
            if tx is not None and tx.running:
                tx.peer = path
        role = "tx" if i % 2 else {"gen": "gen", "tap": "tap"}.get(kind)
        if role:
            w = Worker(path, role)
            self.workers[i] = w
            w.start()

    def stop(self, vq: Virtqueue) -> None:
        i = vq.index
        w = self.workers.pop(i, None)
        if w is not None:
            w.stop()
        path = self.paths[i]
        if path is not None:
            with path.lock:
                path.running = False
                path.flush_calls()
                path.release()

    # --- control ------------------------------------------------------------------------------------------
    def queue_report(self) -> list[dict[str, Any]]:
        out = []
        for i, st in enumerate(self.stats):
            path = self.paths[i]
            w = self.workers.get(i)
            vq = path.vq if path else None
            out.append(
                {
                    "index": i,
                    "dir": "tx" if i % 2 else "rx",
                    "running": bool(path and path.running and vq and vq.attached),
                    "kick_fd": vq.kick_fd if vq else None,
                    "call_fd": vq.call_fd if vq else None,
                    "tid": w.tid if w else None,
                    "broken": vq.broken if vq else None,
                    **st.as_dict(),
                }
            )
        return out

    def _handlers(self) -> dict[str, Any]:
        def stats(_: dict[str, Any]) -> dict[str, Any]:
            dev = self.device
            return {
                "pid": os.getpid(),
                "port": str(self.cfg.port),
                "connected": self.connected,
                "sessions": self.sessions,
                "features": dev.features if dev else None,
                "protocol_features": dev.protocol if dev else None,
                "tunables": self.tun.as_dict(),
                "queues": self.queue_report(),
            }

        def queues(_: dict[str, Any]) -> dict[str, Any]:
            keys = ("index", "dir", "running", "kick_fd", "call_fd", "tid")
            return {"pid": os.getpid(), "queues": [{k: q[k] for k in keys} for q in self.queue_report()]}

        def tunables(_: dict[str, Any]) -> dict[str, Any]:
            return {"tunables": self.tun.as_dict()}

        def set_(kv: dict[str, Any]) -> dict[str, Any]:
            self.tun.set(**kv)
            return {"tunables": self.tun.as_dict()}

        return {"stats": stats, "queues": queues, "tunables": tunables, "set": set_}
