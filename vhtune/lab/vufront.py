"""A minimal vhost-user front-end (the client side of a back-end's socket) for the kvm-irqfd lab VM.

It plays QEMU's part over the wire (QEMU docs/interop/vhost-user.rst): negotiate features, hand over guest
memory (SET_MEM_TABLE with the VM's memfd), describe split rings that live in that memory, and give the
back-end the VM's ioeventfds as kick fds and its irqfds as call fds. Ring addresses in SET_VRING_ADDR are
front-end virtual addresses; descriptor addresses are guest-physical. Header: u32 request, u32 flags
(version 1; bit 3 NEED_REPLY), u32 size; fds travel as SCM_RIGHTS with the message.
"""

from __future__ import annotations

import array
import contextlib
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from vhtune.errors import LabError, ProtocolError

GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE = 1, 2, 3, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL = 12, 13
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, SET_VRING_ENABLE = 15, 16, 18
NAMES = {
    1: "GET_FEATURES",
    2: "SET_FEATURES",
    3: "SET_OWNER",
    5: "SET_MEM_TABLE",
    8: "SET_VRING_NUM",
    9: "SET_VRING_ADDR",
    10: "SET_VRING_BASE",
    11: "GET_VRING_BASE",
    12: "SET_VRING_KICK",
    13: "SET_VRING_CALL",
    15: "GET_PROTOCOL_FEATURES",
    16: "SET_PROTOCOL_FEATURES",
    18: "SET_VRING_ENABLE",
}

VERSION = 0x1
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8
F_PROTOCOL_FEATURES = 1 << 30
F_VERSION_1 = 1 << 32
PROTOCOL_F_REPLY_ACK = 1 << 3
HDR = struct.Struct("<III")


@dataclass(frozen=True)
class Ring:
    index: int
    num: int
    desc_gpa: int
    avail_gpa: int
    used_gpa: int
    kick_fd: int
    call_fd: int


class VhostUserFrontend:
    """Connects to ``socket_path`` and sets up a virtio-net device whose memory is one memfd region."""

    def __init__(self, socket_path: Path, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(socket_path))
        except OSError as exc:
            self.sock.close()
            raise LabError(f"cannot connect to the back-end at {socket_path}: {exc.strerror or exc}") from exc
        self.features = 0
        self.protocol = 0
        self.rings: list[Ring] = []

    # --- wire -------------------------------------------------------------------------------------------
    def _send(self, req: int, payload: bytes = b"", fds: list[int] | None = None, need_reply: bool = False) -> None:
        flags = VERSION | (FLAG_NEED_REPLY if need_reply else 0)
        msg = HDR.pack(req, flags, len(payload)) + payload
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
        try:
            self.sock.sendmsg([msg], anc)
        except OSError as exc:
            raise LabError(f"vhost-user {NAMES.get(req, req)}: send failed: {exc.strerror or exc}") from exc

    def _recv_exact(self, n: int, req: int) -> bytes:
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError:
                chunk = b""
            except OSError as exc:
                raise LabError(f"vhost-user {NAMES.get(req, req)}: no reply ({exc})") from exc
            if not chunk:
                raise LabError(f"the back-end closed the connection after {NAMES.get(req, req)}")
            buf += chunk
        return buf

    def _reply(self, req: int) -> bytes:
        r, flags, size = HDR.unpack(self._recv_exact(HDR.size, req))
        if r != req or not flags & FLAG_REPLY:
            raise ProtocolError(f"reply to request {r} with flags {flags:#x}", request=NAMES.get(req), field="reply")
        if size > 4096:
            raise ProtocolError(f"reply size {size} is too large", request=NAMES.get(req), field="size")
        return self._recv_exact(size, req)

    def _u64_reply(self, req: int) -> int:
        payload = self._reply(req)
        if len(payload) != 8:
            raise ProtocolError(f"reply is {len(payload)} bytes, not 8", request=NAMES.get(req), field="size")
        return int(struct.unpack("<Q", payload)[0])

    def _acked(self, req: int, payload: bytes = b"", fds: list[int] | None = None) -> None:
        """Send; with REPLY_ACK negotiated, wait for the back-end's u64 status (0 = done)."""
        ack = bool(self.protocol & PROTOCOL_F_REPLY_ACK)
        self._send(req, payload, fds, need_reply=ack)
        if ack and (status := self._u64_reply(req)) != 0:
            raise ProtocolError(f"the back-end refused it (status {status})", request=NAMES.get(req))

    # --- set-up -------------------------------------------------------------------------------------------
    def negotiate(self) -> None:
        self._send(SET_OWNER)
        self._send(GET_FEATURES)
        offered = self._u64_reply(GET_FEATURES)
        if not offered & F_VERSION_1:
            raise LabError("the back-end does not offer VIRTIO_F_VERSION_1")
        # Only what this front-end implements: no EVENT_IDX (a call per used batch), no MRG_RXBUF, no INDIRECT.
        self.features = offered & (F_VERSION_1 | F_PROTOCOL_FEATURES)
        if self.features & F_PROTOCOL_FEATURES:
            self._send(GET_PROTOCOL_FEATURES)
            self.protocol = self._u64_reply(GET_PROTOCOL_FEATURES) & PROTOCOL_F_REPLY_ACK
            self._send(SET_PROTOCOL_FEATURES, struct.pack("<Q", self.protocol))
        self._acked(SET_FEATURES, struct.pack("<Q", self.features))

    def set_mem_table(self, memfd: int, size: int, user_addr: int) -> None:
        region = struct.pack("<QQQQ", 0, size, user_addr, 0)  # gpa 0, size, front-end address, mmap offset 0
        self._acked(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region, [memfd])

    def add_ring(self, ring: Ring, user_base: int) -> None:
        i = ring.index
        self._acked(SET_VRING_NUM, struct.pack("<II", i, ring.num))
        self._acked(SET_VRING_BASE, struct.pack("<II", i, 0))
        addrs = (ring.desc_gpa + user_base, ring.used_gpa + user_base, ring.avail_gpa + user_base)
        self._acked(SET_VRING_ADDR, struct.pack("<IIQQQQ", i, 0, *addrs, 0))
        self._acked(SET_VRING_KICK, struct.pack("<Q", i), [ring.kick_fd])
        self._acked(SET_VRING_CALL, struct.pack("<Q", i), [ring.call_fd])
        self.rings.append(ring)

    def enable(self) -> None:
        if self.features & F_PROTOCOL_FEATURES:
            for r in self.rings:
                self._acked(SET_VRING_ENABLE, struct.pack("<II", r.index, 1))

    def stop(self) -> dict[int, int]:
        """GET_VRING_BASE on every ring (the back-end stops it and reports its next avail index)."""
        out: dict[int, int] = {}
        for r in self.rings:
            self._send(GET_VRING_BASE, struct.pack("<II", r.index, 0))
            payload = self._reply(GET_VRING_BASE)
            if len(payload) != 8:
                raise ProtocolError("state reply is not 8 bytes", request="GET_VRING_BASE", field="size")
            idx, num = struct.unpack("<II", payload)
            out[idx] = num
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> VhostUserFrontend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
