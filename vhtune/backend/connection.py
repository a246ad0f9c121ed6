"""The vhost-user socket: server (default) or client with reconnect; messages with SCM_RIGHTS fds.

Every fd received is either handed to the caller inside a :class:`Message` (who then keeps or closes it) or
closed here; a message that fails to parse closes all of its fds before the error propagates.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

from vhtune.backend.messages import HEADER, MAX_FDS, Message, parse_header, req_name
from vhtune.errors import ProtocolError, UsageError

# Room for more fds than any message may carry, so an over-stuffed message is seen (and closed) rather than
# silently truncated by the kernel.
_CMSG_FDS = MAX_FDS * 2
_CMSG_LEN = socket.CMSG_SPACE(_CMSG_FDS * 4)


class PeerClosed(Exception):
    """The front-end closed the socket at a message boundary."""


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _fds_from(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[: len(data) - (len(data) % a.itemsize)])
            fds.extend(a)
    return fds


# A message is read only once select() says bytes are there; a peer that then takes longer than this for the
# whole message is dropped (it would otherwise pin the connection thread, and with it shutdown). A deadline for
# the message, not a per-recv timeout: a peer dripping one byte at a time must not reset it.
READ_TIMEOUT = 5.0


class Conn:
    """One connected front-end."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(READ_TIMEOUT)

    def fileno(self) -> int:
        return self.sock.fileno()

    def _recv_exact(self, n: int, fds: list[int], what: str, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.sock.settimeout(left)
                data, anc, flags, _ = self.sock.recvmsg(n - len(buf), _CMSG_LEN)
            except TimeoutError:
                raise ProtocolError(
                    f"peer stalled {READ_TIMEOUT:g} s after {len(buf)} of {n} bytes", what, "size"
                ) from None
            fds.extend(_fds_from(anc))
            if flags & socket.MSG_CTRUNC:
                raise ProtocolError("too many fds attached (control data truncated)", what, "fds")
            if not data:
                if not buf and what == "header":
                    raise PeerClosed()
                part = "header" if what == "header" else "payload"
                raise ProtocolError(f"peer closed after {len(buf)} of {n} {part} bytes", what, part)
            buf += data
        return bytes(buf)

    def recv(self) -> Message:
        """Read one message; raises PeerClosed on a clean EOF, ProtocolError on a malformed one."""
        fds: list[int] = []
        deadline = time.monotonic() + READ_TIMEOUT
        try:
            head = self._recv_exact(HEADER.size, fds, "header", deadline)
            request, flags, size = parse_header(head)
            payload = self._recv_exact(size, fds, req_name(request), deadline) if size else b""
            if len(fds) > MAX_FDS:
                raise ProtocolError(f"{len(fds)} fds attached, at most {MAX_FDS}", None, "fds")
        except BaseException:
            close_fds(fds)
            raise
        return Message(request, flags, payload, fds)

    def send(self, data: bytes) -> None:
        self.sock.settimeout(READ_TIMEOUT)  # a peer that does not read its replies is dropped, not waited for
        self.sock.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Listener:
    """Server mode: a unix socket the front-end connects to; one front-end at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        p = Path(path)
        if p.exists():
            if not stat.S_ISSOCK(p.stat().st_mode):
                raise UsageError(f"{path} exists and is not a socket", "pick another --socket path")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                probe.connect(path)
            except OSError:
                p.unlink()  # a stale socket file: nobody listens on it
            else:
                raise UsageError(f"{path} is in use by a running process", "stop it or pick another --socket")
            finally:
                probe.close()
        p.parent.mkdir(parents=True, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind(path)
        except OSError as e:
            self.sock.close()
            raise UsageError(f"cannot bind {path}: {e.strerror}", "check the directory exists") from None
        self.sock.listen(1)

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> Conn:
        s, _ = self.sock.accept()
        return Conn(s)

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def connect(path: str, stop: Callable[[], bool], retry_s: float = 0.2) -> Conn | None:
    """Client mode: connect to a front-end's listening socket, retrying until it appears or ``stop()``."""
    while not stop():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.connect(path)
            return Conn(s)
        except OSError:
            s.close()
            time.sleep(retry_s)
    return None
