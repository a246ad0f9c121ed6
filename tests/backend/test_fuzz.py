"""Property fuzzing of the message parser + state machine and of the descriptor walker.

Short here (VHTUNE_FUZZ_EXAMPLES, default 150); `python -m bench backend_fuzz` runs them longer.
"""

from __future__ import annotations

import mmap
import os
import socket
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.backend.conftest import open_fds
from vhtune.backend import messages as m
from vhtune.backend.connection import Conn, PeerClosed
from vhtune.backend.device import NetDevice
from vhtune.backend.memory import GuestMemory, RegionDesc
from vhtune.backend.virtqueue import Virtqueue
from vhtune.errors import ProtocolError

EXAMPLES = int(os.environ.get("VHTUNE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Messages built from real request ids and sizes (so the fuzzer gets past the header), mixed with junk.
_req = st.sampled_from([int(r) for r in m.Req] + [0, 99, 0xFFFFFFFF])
_payload = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda a, b: m.VRING_STATE.pack(a, b), st.integers(0, 4), st.integers(0, 70000)),
    st.builds(lambda v: m.U64.pack(v), st.integers(0, (1 << 64) - 1)),
    st.builds(
        lambda n, regs: m.MEM_TABLE_HEAD.pack(n, 0) + b"".join(m.MEM_REGION.pack(*r) for r in regs),
        st.integers(0, 9),
        st.lists(st.tuples(*[st.sampled_from([0, 0x1000, 1 << 20, (1 << 64) - 0x1000])] * 4), max_size=3),
    ),
)
_msg = st.tuples(_req, st.sampled_from([1, 1 | m.FLAG_NEED_REPLY, 5, 0]), _payload, st.integers(0, 3))


@FUZZ
@given(st.lists(_msg, min_size=1, max_size=12), st.binary(max_size=20))
def test_fuzz_message_stream(msgs: list[tuple[int, int, bytes, int]], tail: bytes) -> None:
    before = open_fds()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    memfd = os.memfd_create("fuzz")
    os.ftruncate(memfd, 1 << 20)
    conn = Conn(b)
    dev = NetDevice(queue_pairs=1)
    try:
        a.setblocking(False)
        for req, flags, payload, nfds in msgs:
            fds = [memfd] * nfds
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{nfds}i", *fds))] if fds else []
            try:
                a.sendmsg([m.HEADER.pack(req, flags, len(payload)) + payload], anc)
            except BlockingIOError:
                break
        a.sendall(tail)
        a.shutdown(socket.SHUT_WR)
        while True:
            try:
                msg = conn.recv()
            except (PeerClosed, ProtocolError):
                break
            try:
                dev.handle(msg)
            except ProtocolError:
                break
            finally:
                # handle() owns the fds; anything it kept is closed by dev.close() below.
                pass
    finally:
        dev.close()
        conn.close()
        a.close()
        os.close(memfd)
    assert open_fds() <= before


_desc = st.tuples(
    st.sampled_from([0x1000, 0x2000, 0xFFF0, 0x10000, 0x20000, (1 << 64) - 8]),
    st.sampled_from([0, 1, 12, 16, 32, 64, 0x1000, 0xFFFFFFFF]),
    st.integers(0, 7),
    st.integers(0, 20),
)


@FUZZ
@given(st.lists(_desc, min_size=16, max_size=16), st.integers(0, 17), st.booleans(), st.booleans())
def test_fuzz_descriptor_walker(table: list[tuple[int, int, int, int]], head: int, writable: bool, ind: bool) -> None:
    size = 0x20000
    fd = os.memfd_create("fuzz-walk")
    try:
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size)
        for k, d in enumerate(table):
            struct.pack_into("<QIHH", mm, 16 * k, *d)
        # An indirect table at 0x1000 may point back at the same entries.
        mm[0x1000 : 0x1000 + 16 * 16] = mm[0 : 16 * 16]
        mm.close()
        mem = GuestMemory.map([RegionDesc(0, size, 0x7F0000000000, 0)], [fd])
    finally:
        os.close(fd)
    vq = Virtqueue(1)
    vq.num = 16
    vq.indirect = ind
    vq.addrs = (0x7F0000000000, 0x7F0000008000, 0x7F0000009000)
    vq.attach(mem)
    try:
        try:
            segs = vq.walk(head, writable, max_bytes=65548)
        except ProtocolError:
            return
        assert 1 <= len(segs) <= 1024
        assert sum(s.len for s in segs) <= 65548
        for s in segs:
            assert s.len > 0 and s.off + s.len <= size
    finally:
        vq.detach()
        mem.close()
