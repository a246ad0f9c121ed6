"""Compile the probes in a short-lived process and hand the program and map fds to the parent.

Run as ``python -m vhtune.probes.child FD`` with FD one end of a SOCK_SEQPACKET socketpair. Protocol: the
parent sends one JSON message ``{"families": [...], "config": {...}}``; the child compiles with bcc (the
clang/LLVM cost stays in this process), checks the struct mirrors, and answers with one message: JSON
``{"maps": [...], "progs": [...]}`` whose entries index the fds attached with SCM_RIGHTS, or
``{"error": ..., "kind": ..., "hint": ...}``. The tracepoints bcc auto-attached here go away when this
process exits; the parent attaches its own.
"""

from __future__ import annotations

import array
import ctypes as ct
import json
import signal
import socket
import sys
from typing import Any

MAX_MSG = 1 << 20


def _serve(sock: socket.socket) -> dict[str, Any]:
    from vhtune.errors import VhtuneError
    from vhtune.probes.layouts import check_layouts
    from vhtune.probes.loader import ProbeConfig, compile_module, net_variant, possible_cpus

    req = json.loads(sock.recv(MAX_MSG))
    cfg = ProbeConfig(
        **{
            **req["config"],
            "families": tuple(req["config"]["families"]),
            "extra_cflags": tuple(req["config"]["extra_cflags"]),
        }
    )
    families: list[str] = req["families"]
    net_note = ""
    try:
        if "net" in families:
            cfg, net_note = net_variant(cfg)  # BTF parsed here, not in the agent
        bpf = compile_module(families, kprobes=False, config=cfg, ncpus=possible_cpus())
        names = [m for f in families for m in cfg.family(f)[2]] + ["lost"]
        check_layouts(bpf, names)
    except VhtuneError as exc:
        return {"error": exc.message, "hint": exc.hint, "kind": type(exc).__name__}
    fds: list[int] = []
    maps = []
    for name in names:
        t = bpf[name.encode()]
        leaf = getattr(t, "sLeaf", t.Leaf)
        maps.append(
            {
                "name": name,
                "index": len(fds),
                "type": int(t.ttype),
                "key_size": ct.sizeof(t.Key),
                "value_size": ct.sizeof(leaf),
                "max_entries": int(t.max_entries),
            }
        )
        fds.append(t.map_fd)
    progs = []
    for fname, fn in bpf.funcs.items():
        progs.append({"name": fname.decode(), "index": len(fds)})
        fds.append(fn.fd)
    header = json.dumps({"maps": maps, "progs": progs, "net_offsets": cfg.net_offsets, "net_note": net_note}).encode()
    sock.sendmsg([header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    return {}


def main() -> None:
    # A terminal's Ctrl-C or hang-up reaches the whole process group, systemd's stop every process of the unit:
    # the parent turns them into a clean stop after attach, so the compile must not die of them.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        err = _serve(sock)
    except Exception as exc:  # anything unexpected still reaches the parent as one sentence
        err = {"error": f"{type(exc).__name__}: {exc}", "hint": None, "kind": "ProbeError"}
    if err:
        sock.send(json.dumps(err).encode())
    sock.close()


if __name__ == "__main__":
    main()
