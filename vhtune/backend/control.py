"""The control socket: JSON lines over a unix socket (mode 0600), one request → one reply line.

Requests: ``{"cmd":"stats"}``, ``{"cmd":"queues"}``, ``{"cmd":"tunables"}``, ``{"cmd":"set", "burst": 1, …}``.
Replies carry ``"ok": true`` and the data, or ``"ok": false, "error": "one sentence"``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

from vhtune.errors import UsageError, VhtuneError

log = logging.getLogger("vhtune.backend")
MAX_LINE = 64 * 1024

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer(threading.Thread):
    def __init__(self, path: str, handlers: dict[str, Handler]) -> None:
        super().__init__(name="vhtune-ctl", daemon=True)
        self.path = path
        self.handlers = handlers
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)  # the socket file is created 0600: only root may steer the daemon
        try:
            self.sock.bind(path)
        except OSError as e:
            self.sock.close()
            raise UsageError(f"cannot bind control socket {path}: {e.strerror}") from None
        finally:
            os.umask(old)
        self.sock.listen(8)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._closing = False

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self.is_alive():
            self.join(5)
        self.sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def run(self) -> None:
        clients: dict[int, tuple[socket.socket, bytearray]] = {}
        try:
            while not self._closing:
                rl = [self.sock.fileno(), self._wake_r, *clients]
                ready, _, _ = select.select(rl, [], [], None)
                for fd in ready:
                    if fd == self._wake_r:
                        continue
                    if fd == self.sock.fileno():
                        c, _ = self.sock.accept()
                        c.settimeout(2.0)
                        clients[c.fileno()] = (c, bytearray())
                        continue
                    c, buf = clients[fd]
                    if not self._serve(c, buf):
                        del clients[fd]
                        c.close()
        finally:
            for c, _ in clients.values():
                c.close()

    def _serve(self, c: socket.socket, buf: bytearray) -> bool:
        try:
            data = c.recv(65536)
        except OSError:
            return False
        if not data:
            return False
        buf += data
        if len(buf) > MAX_LINE and b"\n" not in buf:
            self._send(c, {"ok": False, "error": f"request line longer than {MAX_LINE} bytes"})
            return False
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            if line.strip() and not self._send(c, self.dispatch(line)):
                return False
        return True

    def _send(self, c: socket.socket, obj: dict[str, Any]) -> bool:
        try:
            c.sendall(json.dumps(obj).encode() + b"\n")
        except OSError:
            return False
        return True

    def dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"ok": False, "error": "request is not valid JSON"}
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {"ok": False, "error": 'request must be an object with a "cmd" string'}
        h = self.handlers.get(req["cmd"])
        if h is None:
            return {"ok": False, "error": f"unknown cmd {req['cmd']!r}; known: {', '.join(self.handlers)}"}
        try:
            return {"ok": True, **h({k: v for k, v in req.items() if k != "cmd"})}
        except VhtuneError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:
            log.exception("control command %s failed", req["cmd"])
            return {"ok": False, "error": f"internal error: {e!r}"}
