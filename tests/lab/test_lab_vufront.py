"""The kvm-irqfd vhost-user front-end against a scripted peer: wire format and refusal of bad replies."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from vhtune.errors import LabError, ProtocolError
from vhtune.lab import vufront
from vhtune.lab.backends import normalize_vhtune


def _peer(path: Path, script: Callable[[socket.socket], None]) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        c, _ = srv.accept()
        try:
            script(c)
        finally:
            c.close()
            srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def _read(c: socket.socket) -> tuple[int, int, bytes]:
    req, flags, size = struct.unpack("<III", c.recv(12, socket.MSG_WAITALL))
    return req, flags, c.recv(size, socket.MSG_WAITALL) if size else b""


def test_negotiation_on_the_wire(tmp_path: Path) -> None:
    seen: list[tuple[int, int, bytes]] = []
    offered = vufront.F_VERSION_1 | vufront.F_PROTOCOL_FEATURES | (1 << 29)  # + EVENT_IDX, not taken

    def script(c: socket.socket) -> None:
        for _ in range(5):
            req, flags, payload = _read(c)
            seen.append((req, flags, payload))
            if req == vufront.GET_FEATURES:
                c.sendall(struct.pack("<IIIQ", req, 0x5, 8, offered))
            elif req == vufront.GET_PROTOCOL_FEATURES:
                c.sendall(struct.pack("<IIIQ", req, 0x5, 8, vufront.PROTOCOL_F_REPLY_ACK | 1))
            elif flags & vufront.FLAG_NEED_REPLY:
                c.sendall(struct.pack("<IIIQ", req, 0x5, 8, 0))

    sock = tmp_path / "peer.sock"
    t = _peer(sock, script)
    with vufront.VhostUserFrontend(sock) as fe:
        fe.negotiate()
    t.join(2)
    reqs = [r for r, _f, _p in seen]
    assert reqs == [
        vufront.SET_OWNER,
        vufront.GET_FEATURES,
        vufront.GET_PROTOCOL_FEATURES,
        vufront.SET_PROTOCOL_FEATURES,
        vufront.SET_FEATURES,
    ]
    assert all(f & 0x3 == 1 for _r, f, _p in seen)  # version 1 in every header
    (acked,) = struct.unpack("<Q", seen[-1][2])
    assert acked == vufront.F_VERSION_1 | vufront.F_PROTOCOL_FEATURES  # only what this front-end implements
    assert seen[-1][1] & vufront.FLAG_NEED_REPLY  # REPLY_ACK negotiated → every set-up step is confirmed


def test_a_reply_to_the_wrong_request_is_refused(tmp_path: Path) -> None:
    def script(c: socket.socket) -> None:
        _read(c)  # SET_OWNER
        req, _f, _p = _read(c)
        c.sendall(struct.pack("<IIIQ", req + 1, 0x5, 8, 0))

    sock = tmp_path / "bad.sock"
    t = _peer(sock, script)
    with vufront.VhostUserFrontend(sock) as fe, pytest.raises(ProtocolError, match="GET_FEATURES"):
        fe.negotiate()
    t.join(2)


def test_a_peer_that_hangs_up_is_a_lab_error(tmp_path: Path) -> None:
    sock = tmp_path / "gone.sock"
    t = _peer(sock, lambda c: None)
    with vufront.VhostUserFrontend(sock) as fe, pytest.raises(LabError, match="closed the connection"):
        fe.negotiate()
    t.join(2)


def test_normalize_reference_backend_stats() -> None:
    raw = {
        "queues": [
            {
                "dir": "rx",
                "packets": 5,
                "bytes": 320,
                "kicks": 1,
                "calls": 4,
                "bursts": 2,
                "drops": {"no_rx_buffer": 3},
            },
            {"dir": "tx", "packets": 7, "bytes": 448, "kicks": 6, "calls": 7, "bursts": 7, "drops": {}},
        ]
    }
    st = normalize_vhtune(raw)
    assert (st["from_guest_packets"], st["to_guest_packets"], st["kicks"], st["calls"]) == (7, 5, 7, 11)
    assert st["drops"] == {"no_rx_buffer": 3}
