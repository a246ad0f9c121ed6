"""Python client for the back-end's control socket (used by tests, the lab, the tuner and the recorder).

>>> c = ControlClient("/run/vhtune/vm0.ctl")
>>> c.queues()   # [{"index": 1, "dir": "tx", "kick_fd": 12, "call_fd": 13, "tid": 4242, ...}, ...]
>>> c.set(burst=64, busy_poll_us=50)
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from vhtune.errors import VhtuneError


class ControlClient:
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, cmd: str, **kv: Any) -> dict[str, Any]:
        """Send one request; returns the reply's data or raises VhtuneError with the daemon's sentence."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
            s.sendall(json.dumps({"cmd": cmd, **kv}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError as e:
            raise VhtuneError(
                f"control socket {self.path}: {e.strerror or e}", "is `vhtune backend --control` running?"
            ) from None
        finally:
            s.close()
        try:
            reply = json.loads(buf)
        except json.JSONDecodeError:
            raise VhtuneError(f"control socket {self.path} sent a malformed reply") from None
        if not reply.get("ok"):
            raise VhtuneError(str(reply.get("error", "request failed")))
        reply.pop("ok")
        return dict(reply)

    def stats(self) -> dict[str, Any]:
        return self.call("stats")

    def queues(self) -> list[dict[str, Any]]:
        return list(self.call("queues")["queues"])

    def tunables(self) -> dict[str, Any]:
        return dict(self.call("tunables")["tunables"])

    def set(self, **kv: Any) -> dict[str, Any]:
        return dict(self.call("set", **kv)["tunables"])


def control_socket_of(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The ``--control PATH`` a running ``vhtune backend`` was started with, or None (no such option, gone)."""
    try:
        args = [a.decode(errors="replace") for a in (proc / str(pid) / "cmdline").read_bytes().split(b"\0")]
    except OSError:
        return None
    for i, a in enumerate(args):
        if a == "--control" and i + 1 < len(args) and args[i + 1]:
            return args[i + 1]
        if a.startswith("--control="):
            return a.split("=", 1)[1]
    return None
