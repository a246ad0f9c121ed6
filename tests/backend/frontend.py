"""A tiny vhost-user front-end driver for tests: memfd guest memory, the handshake, and a split-ring driver
that writes descriptors and avail entries into that memory and reads the used ring back.

Guest layout (guest-physical GPA.. / front-end virtual UVA..): queue i's rings at 0x4000*i (desc, then avail
at +0x1000, used at +0x2000, num ≤ 256); packet buffers from BUF_BASE upward.
"""

from __future__ import annotations

import mmap
import os
import select
import socket
import struct
import time
from collections.abc import Iterable, Sequence

from vhtune.backend import messages as m
from vhtune.backend import net
from vhtune.backend.messages import Req

GPA = 0x100000
UVA = 0x7F1200000000
MEM_SIZE = 4 << 20
BUF_BASE = 0x80000
RING_STRIDE = 0x4000
DESC = struct.Struct("<QIHH")
F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4
FEATURES = net.offered_features(True)


class Frontend:
    def __init__(self, sock: socket.socket, mem_size: int = MEM_SIZE) -> None:
        self.sock = sock
        self.sock.settimeout(5.0)
        self.memfd = os.memfd_create("vhtune-test-guest", os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, mem_size)
        self.mem_size = mem_size
        self.mm = mmap.mmap(self.memfd, mem_size)
        self.num: dict[int, int] = {}
        self.avail_idx: dict[int, int] = {}
        self.used_seen: dict[int, int] = {}
        self.free_head: dict[int, int] = {}
        self.kick: dict[int, int] = {}
        self.call: dict[int, int] = {}
        self.buf_next = BUF_BASE
        self.protocol = 0

    @classmethod
    def connect(cls, path: str, timeout: float = 5.0) -> Frontend:
        deadline = time.monotonic() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return cls(s)
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        for fd in [*self.kick.values(), *self.call.values()]:
            os.close(fd)
        self.kick.clear()
        self.call.clear()
        self.sock.close()
        self.mm.close()
        os.close(self.memfd)

    def __enter__(self) -> Frontend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- wire -----------------------------------------------------------------------------------------
    def send(self, req: int, payload: bytes = b"", fds: Sequence[int] = (), flags: int = m.VERSION) -> None:
        data = m.HEADER.pack(req, flags, len(payload)) + payload
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
        self.sock.sendmsg([data], anc)

    def recv_reply(self, timeout: float = 5.0) -> tuple[int, int, bytes]:
        self.sock.settimeout(timeout)
        head = self._exact(12)
        req, flags, size = m.HEADER.unpack(head)
        return req, flags, self._exact(size) if size else b""

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("back-end closed the connection")
            buf += chunk
        return buf

    def get_u64(self, req: int) -> int:
        self.send(req)
        r, flags, payload = self.recv_reply()
        assert r == req and flags == m.VERSION | m.FLAG_REPLY, (r, flags)
        return int(m.U64.unpack(payload)[0])

    def closed_by_peer(self, timeout: float = 3.0) -> bool:
        """True once the back-end has closed its end (EOF)."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return False
        try:
            return self.sock.recv(4096) == b""
        except OSError:
            return True

    # --- handshake ------------------------------------------------------------------------------------
    def handshake(self, features: int | None = None, protocol: int | None = None) -> None:
        offered = self.get_u64(Req.GET_FEATURES)
        feats = offered if features is None else features
        if feats & (1 << net.VHOST_USER_F_PROTOCOL_FEATURES):
            poff = self.get_u64(Req.GET_PROTOCOL_FEATURES)
            self.protocol = poff if protocol is None else protocol
            self.send(Req.SET_PROTOCOL_FEATURES, m.U64.pack(self.protocol))
        self.send(Req.SET_OWNER)
        self.send(Req.SET_FEATURES, m.U64.pack(feats))
        self.features = feats
        self.set_mem_table()

    def mem_table_payload(self, regions: Sequence[tuple[int, int, int, int]] | None = None) -> bytes:
        regions = regions or [(GPA, self.mem_size, UVA, 0)]
        body = b"".join(m.MEM_REGION.pack(*r) for r in regions)
        return m.MEM_TABLE_HEAD.pack(len(regions), 0) + body

    def set_mem_table(self) -> None:
        self.send(Req.SET_MEM_TABLE, self.mem_table_payload(), [self.memfd])

    def ring_addrs(self, i: int, num: int) -> tuple[int, int, int]:
        base = RING_STRIDE * i
        return base, base + 0x1000, base + 0x2000

    def start(self, queues: Iterable[int] = (0, 1), num: int = 256) -> None:
        """The handshake, then each of ``queues`` set up with ``num`` entries (and enabled)."""
        self.handshake()
        for q in queues:
            self.setup_queue(q, num)

    def setup_queue(self, i: int, num: int = 256, enable: bool = True, base: int = 0) -> None:
        """Zeroed rings whose free-running avail/used indices start at ``base`` (SET_VRING_BASE)."""
        d, a, u = self.ring_addrs(i, num)
        self.mm[d : d + RING_STRIDE] = bytes(RING_STRIDE)
        struct.pack_into("<H", self.mm, a + 2, base)
        struct.pack_into("<H", self.mm, u + 2, base)
        self.num[i], self.avail_idx[i], self.used_seen[i], self.free_head[i] = num, base, base, 0
        self.send(Req.SET_VRING_NUM, m.VRING_STATE.pack(i, num))
        self.send(Req.SET_VRING_BASE, m.VRING_STATE.pack(i, base))
        self.send(Req.SET_VRING_ADDR, m.VRING_ADDR.pack(i, 0, UVA + d, UVA + u, UVA + a, 0))
        self.call[i] = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.kick[i] = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.send(Req.SET_VRING_CALL, m.U64.pack(i), [self.call[i]])
        self.send(Req.SET_VRING_KICK, m.U64.pack(i), [self.kick[i]])
        if enable and self.features & (1 << net.VHOST_USER_F_PROTOCOL_FEATURES):
            self.send(Req.SET_VRING_ENABLE, m.VRING_STATE.pack(i, 1))

    def sync(self) -> None:
        """Round-trip a GET_FEATURES so every earlier message has been handled."""
        self.get_u64(Req.GET_FEATURES)

    # --- ring driver ----------------------------------------------------------------------------------
    def alloc(self, size: int) -> int:
        """Guest-physical address of a fresh buffer (bump allocator that wraps)."""
        size = (size + 63) & ~63
        if self.buf_next + size > self.mem_size:
            self.buf_next = BUF_BASE
        off = self.buf_next
        self.buf_next += size
        return GPA + off

    def write(self, gpa: int, data: bytes) -> None:
        self.mm[gpa - GPA : gpa - GPA + len(data)] = data

    def read(self, gpa: int, n: int) -> bytes:
        return self.mm[gpa - GPA : gpa - GPA + n]

    def put_desc(self, i: int, slot: int, addr: int, ln: int, flags: int, nxt: int) -> None:
        d, _, _ = self.ring_addrs(i, self.num[i])
        DESC.pack_into(self.mm, d + 16 * slot, addr, ln, flags, nxt)

    def add_chain(self, i: int, descs: Sequence[tuple[int, int, int]], publish: bool = True) -> int:
        """descs: (gpa, len, flags) — NEXT links are filled in. Returns the head slot."""
        num = self.num[i]
        head = self.free_head[i]
        slots = [(head + k) % num for k in range(len(descs))]
        for k, (addr, ln, fl) in enumerate(descs):
            nxt = slots[k + 1] if k + 1 < len(descs) else 0
            self.put_desc(i, slots[k], addr, ln, fl | (F_NEXT if k + 1 < len(descs) else 0), nxt)
        self.free_head[i] = (head + len(descs)) % num
        self.push_avail(i, head, publish)
        return head

    def push_avail(self, i: int, head: int, publish: bool = True) -> None:
        _, a, _ = self.ring_addrs(i, self.num[i])
        idx = self.avail_idx[i]
        struct.pack_into("<H", self.mm, a + 4 + 2 * (idx % self.num[i]), head)
        self.avail_idx[i] = (idx + 1) & 0xFFFF
        if publish:
            self.publish(i)

    def publish(self, i: int, idx: int | None = None) -> None:
        _, a, _ = self.ring_addrs(i, self.num[i])
        struct.pack_into("<H", self.mm, a + 2, self.avail_idx[i] if idx is None else idx)

    def set_avail_flags(self, i: int, flags: int) -> None:
        _, a, _ = self.ring_addrs(i, self.num[i])
        struct.pack_into("<H", self.mm, a, flags)

    def do_kick(self, i: int) -> None:
        os.eventfd_write(self.kick[i], 1)

    def tx(self, i: int, frames: Sequence[bytes], hdr: bytes | None = None, kick: bool = True) -> list[int]:
        heads = []
        for f in frames:
            data = (net.rx_header(0) if hdr is None else hdr) + f
            addr = self.alloc(len(data))
            self.write(addr, data)
            heads.append(self.add_chain(i, [(addr, len(data), 0)], publish=False))
        self.publish(i)
        if kick:
            self.do_kick(i)
        return heads

    def post_rx(self, i: int, n: int, size: int = 2048) -> list[tuple[int, int]]:
        bufs = []
        for _ in range(n):
            addr = self.alloc(size)
            self.add_chain(i, [(addr, size, F_WRITE)], publish=False)
            bufs.append((addr, size))
        self.publish(i)
        self.do_kick(i)
        return bufs

    def used(self, i: int) -> list[tuple[int, int]]:
        """New used entries since the last call."""
        _, _, u = self.ring_addrs(i, self.num[i])
        (idx,) = struct.unpack_from("<H", self.mm, u + 2)
        out = []
        while self.used_seen[i] != idx:
            slot = self.used_seen[i] % self.num[i]
            out.append(struct.unpack_from("<II", self.mm, u + 4 + 8 * slot))
            self.used_seen[i] = (self.used_seen[i] + 1) & 0xFFFF
        return out

    def used_idx(self, i: int) -> int:
        _, _, u = self.ring_addrs(i, self.num[i])
        return int(struct.unpack_from("<H", self.mm, u + 2)[0])

    def wait_used(self, i: int, count: int, timeout: float = 5.0) -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            got += self.used(i)
            if len(got) < count:
                time.sleep(0.002)
        return got
