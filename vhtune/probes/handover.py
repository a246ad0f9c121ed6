"""Parent side of the compile hand-over (see vhtune/probes/child.py): spawn the child, receive the fds,
wrap them in a RawModule."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import subprocess
import sys

from vhtune.errors import CapabilityError, ProbeError
from vhtune.probes.layouts import MAPS
from vhtune.probes.raw import MapInfo, RawMap, RawModule

MAX_FDS = 200  # below SCM_MAX_FD (253)
MAX_MSG = 1 << 20


def load_in_child(families: list[str], config: object, ncpus: int, timeout: float = 60.0) -> RawModule:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vhtune.probes.child", str(child.fileno())],
            pass_fds=(child.fileno(),),
        )
        child.close()
        cfg = dataclasses.asdict(config)  # type: ignore[call-overload]
        parent.settimeout(timeout)
        try:
            parent.sendall(json.dumps({"families": families, "config": cfg}).encode())
            msg, fds, _flags, _addr = socket.recv_fds(parent, MAX_MSG, MAX_FDS)
        except TimeoutError:
            proc.kill()
            raise ProbeError(f"compiling the probes took more than {timeout:.0f} s") from None
        except OSError:
            # The child died before it read the request (EPIPE: a group signal can reach it before its
            # interpreter ignores them) or mid-reply: said as below, with its exit code.
            msg, fds = b"", []
        finally:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    finally:
        parent.close()
        child.close()
    if not msg:
        raise ProbeError(f"the probe compiler process exited with code {proc.returncode} and said nothing")
    reply = json.loads(msg)
    if "error" in reply:
        for fd in fds:
            _close(fd)
        cls = CapabilityError if reply.get("kind") == "CapabilityError" else ProbeError
        raise cls(reply["error"], hint=reply.get("hint"))
    try:
        maps = {}
        for m in reply["maps"]:
            info = MapInfo(m["name"], fds[m["index"]], m["type"], m["key_size"], m["value_size"], m["max_entries"])
            key_t, val_t = MAPS[m["name"]]
            maps[m["name"]] = RawMap(info, key_t, val_t, ncpus)
        progs = {p["name"]: fds[p["index"]] for p in reply["progs"]}
    except (KeyError, IndexError, ProbeError):
        for fd in fds:
            _close(fd)
        raise
    module = RawModule(maps, progs)
    module.net_offsets = dict(reply.get("net_offsets") or {})
    module.net_note = str(reply.get("net_note") or "")
    return module


def _close(fd: int) -> None:
    import os

    with contextlib.suppress(OSError):
        os.close(fd)
