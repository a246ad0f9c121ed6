"""The back-end against the test front-end over a real unix socket with memfd guest memory."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from tests.backend.conftest import Running, eventfd_count, open_fds, start_backend, wait_for
from tests.backend.frontend import F_INDIRECT, F_WRITE, GPA
from vhtune.backend import messages as m
from vhtune.backend import net
from vhtune.backend.messages import Req


def test_features_and_replies(backend: Running) -> None:
    with backend.connect() as fe:
        f = fe.get_u64(Req.GET_FEATURES)
        assert f & (1 << net.VIRTIO_F_VERSION_1) and f & (1 << net.VIRTIO_NET_F_MRG_RXBUF)
        assert not f & (1 << net.VIRTIO_F_IOMMU_PLATFORM)
        p = fe.get_u64(Req.GET_PROTOCOL_FEATURES)
        assert p & (1 << net.PROTO_REPLY_ACK) and p & (1 << net.PROTO_MQ)
        assert fe.get_u64(Req.GET_QUEUE_NUM) == 1
        fe.send(Req.SET_PROTOCOL_FEATURES, m.U64.pack(p))
        fe.send(Req.SET_OWNER, flags=m.VERSION | m.FLAG_NEED_REPLY)
        req, flags, payload = fe.recv_reply()
        assert (req, flags, payload) == (Req.SET_OWNER, m.VERSION | m.FLAG_REPLY, m.U64.pack(0))
        fe.send(Req.SET_STATUS, m.U64.pack(0xF))
        assert fe.get_u64(Req.GET_STATUS) == 0xF


def test_tx_sink_counts_and_returns_buffers(backend: Running) -> None:
    with backend.frontend() as fe:
        frames = [net.make_frame(64, k) for k in range(100)]
        for k in range(0, 100, 20):
            fe.tx(1, frames[k : k + 20])
            assert len(fe.wait_used(1, 20)) == 20
        assert wait_for(lambda: backend.queue_stats(1)["packets"] == 100)
        st = backend.queue_stats(1)
        assert st["bytes"] == 100 * 64 and st["kicks"] >= 1 and st["drops"] == {}
        q = backend.control.queues()[1]
        assert q["tid"] and os.path.exists(f"/proc/self/task/{q['tid']}")
        with open(f"/proc/self/task/{q['tid']}/comm") as fh:
            assert fh.read().strip() == "vhtune-q1"
        # The reported fd numbers are the back-end's own: eventfds in this process.
        assert os.readlink(f"/proc/self/fd/{q['kick_fd']}") == "anon_inode:[eventfd]"


def test_echo_swaps_macs_into_rx(short_tmp: Path) -> None:
    with start_backend(short_tmp, "echo") as r, r.frontend() as fe:
        bufs = fe.post_rx(0, 8)
        frame = bytes.fromhex("aaaaaaaaaaaabbbbbbbbbbbb0800") + b"x" * 50
        fe.tx(1, [frame] * 3)
        used = fe.wait_used(0, 3)
        assert len(used) == 3
        for head, ln in used:
            addr = bufs[head][0]
            data = fe.read(addr, ln)
            hdr = net.HDR.unpack(data[:12])
            assert hdr[6] == 1  # num_buffers
            assert data[12:] == bytes.fromhex("bbbbbbbbbbbbaaaaaaaaaaaa0800") + b"x" * 50
        # Call eventfd fired for RX.
        assert wait_for(lambda: r.queue_stats(0)["calls"] >= 1)


def test_gen_fills_rx_and_mrg_spans_buffers(short_tmp: Path) -> None:
    with start_backend(short_tmp, "gen:1000") as r, r.frontend() as fe:
        # 300-byte buffers: each 1012-byte packet needs 4 of them with MRG_RXBUF.
        bufs = fe.post_rx(0, 8, size=300)
        used = fe.wait_used(0, 8)
        assert [ln for _, ln in used] == [300, 300, 300, 112] * 2
        first = fe.read(bufs[used[0][0]][0], 12)
        assert net.HDR.unpack(first)[6] == 4
        payload = b"".join(fe.read(bufs[h][0], ln) for h, ln in used[:4])[12:]
        assert payload == net.make_frame(1000)
        # Plain 2 KiB buffers take the vectorized path.
        fe.post_rx(0, 64)
        assert len(fe.wait_used(0, 64)) == 64
        assert wait_for(lambda: r.queue_stats(0)["packets"] == 66)


def test_indirect_and_split_header(backend: Running) -> None:
    with backend.frontend() as fe:
        frame = net.make_frame(100)
        data = net.rx_header(0) + frame
        # Header split 5 + 7 bytes across two descriptors, then the frame: legal with VERSION_1.
        parts = [data[:5], data[5:12], data[12:]]
        addrs = [fe.alloc(len(p)) for p in parts]
        for a, p in zip(addrs, parts, strict=True):
            fe.write(a, p)
        fe.add_chain(1, [(a, len(p), 0) for a, p in zip(addrs, parts, strict=True)])
        # The same through an indirect table.
        table = b"".join(
            struct.pack("<QIHH", a, len(p), 1 if k < 2 else 0, k + 1)
            for k, (a, p) in enumerate(zip(addrs, parts, strict=True))
        )
        ta = fe.alloc(len(table))
        fe.write(ta, table)
        fe.add_chain(1, [(ta, len(table), F_INDIRECT)])
        fe.do_kick(1)
        assert len(fe.wait_used(1, 2)) == 2
        assert wait_for(lambda: backend.queue_stats(1)["packets"] == 2)
        assert backend.queue_stats(1)["bytes"] == 200


def test_u16_wrap_and_event_idx(backend: Running) -> None:
    with backend.frontend(queues=(0,)) as fe:
        # Start the TX ring just below the u16 wrap.
        fe.setup_queue(1, 64, base=65530)
        _, a, u = fe.ring_addrs(1, 64)
        # used_event far away: no call expected; then set it to fire.
        struct.pack_into("<H", fe.mm, a + 4 + 2 * 64, 100)
        heads = fe.tx(1, [net.make_frame(64)] * 12)
        # The very heads posted, in order: a back-end that ignored SET_VRING_BASE (starting at 0) would take
        # only the 6 entries past the wrap and still leave used.idx at 6.
        assert [h for h, _ in fe.wait_used(1, 12)] == heads
        assert fe.used_idx(1) == (65530 + 12) & 0xFFFF
        time.sleep(0.05)
        with pytest.raises(BlockingIOError):
            os.eventfd_read(fe.call[1])
        # avail_event is published after the worker goes to sleep: the next kick point is last_avail.
        assert wait_for(lambda: struct.unpack_from("<H", fe.mm, u + 4 + 8 * 64)[0] == 6)
        struct.pack_into("<H", fe.mm, a + 4 + 2 * 64, 6)  # used_event = 6: the next used entry crosses it
        fe.tx(1, [net.make_frame(64)])
        assert len(fe.wait_used(1, 1)) == 1
        assert wait_for(lambda: eventfd_count(fe.call[1]) >= 1)


def test_no_event_idx_flags_suppression(short_tmp: Path) -> None:
    with start_backend(short_tmp, "sink", event_idx=False) as r, r.frontend() as fe:
        assert not fe.features & (1 << net.VIRTIO_RING_F_EVENT_IDX)
        fe.set_avail_flags(1, 1)  # VRING_AVAIL_F_NO_INTERRUPT
        fe.tx(1, [net.make_frame(64)] * 4)
        assert len(fe.wait_used(1, 4)) == 4
        time.sleep(0.05)
        assert eventfd_count(fe.call[1]) == 0
        fe.set_avail_flags(1, 0)
        fe.tx(1, [net.make_frame(64)] * 4)
        assert len(fe.wait_used(1, 4)) == 4
        assert wait_for(lambda: eventfd_count(fe.call[1]) >= 1)
        # Sleeping worker re-enabled kicks: used.flags NO_NOTIFY clear.
        _, _, u = fe.ring_addrs(1, 256)
        assert wait_for(lambda: struct.unpack_from("<H", fe.mm, u)[0] == 0)


def test_get_vring_base_stops_and_reconnect_resumes(backend: Running) -> None:
    before = open_fds()
    fe = backend.connect()
    fe.start()
    fe.tx(1, [net.make_frame(64)] * 5)
    assert len(fe.wait_used(1, 5)) == 5
    fe.send(Req.GET_VRING_BASE, m.VRING_STATE.pack(1, 0))
    req, _, payload = fe.recv_reply()
    assert req == Req.GET_VRING_BASE and m.VRING_STATE.unpack(payload) == (1, 5)
    assert not backend.control.queues()[1]["running"]
    fe.close()
    assert wait_for(lambda: not backend.control.stats()["connected"])
    assert wait_for(lambda: open_fds() <= before)
    with backend.frontend() as fe2:
        fe2.tx(1, [net.make_frame(64)] * 5)
        assert len(fe2.wait_used(1, 5)) == 5
        assert wait_for(lambda: backend.queue_stats(1)["packets"] == 10)


def test_mem_table_while_running_remaps(backend: Running) -> None:
    with backend.frontend() as fe:
        fe.tx(1, [net.make_frame(64)] * 3)
        assert len(fe.wait_used(1, 3)) == 3
        fe.send(Req.SET_MEM_TABLE, fe.mem_table_payload(), [fe.memfd], flags=m.VERSION | m.FLAG_NEED_REPLY)
        assert fe.recv_reply()[2] == m.U64.pack(0)
        fe.tx(1, [net.make_frame(64)] * 3)
        assert len(fe.wait_used(1, 3)) == 3
        assert backend.control.queues()[1]["running"]


def test_control_set_and_bad_requests(backend: Running) -> None:
    from vhtune.errors import VhtuneError

    t = backend.control.set(burst=1, busy_poll_us=10)
    assert t["burst"] == 1 and t["busy_poll_us"] == 10
    with pytest.raises(VhtuneError, match="burst must be an integer"):
        backend.control.set(burst=0)
    with pytest.raises(VhtuneError, match="unknown tunable"):
        backend.control.set(nope=1)
    with pytest.raises(VhtuneError, match="unknown cmd"):
        backend.control.call("explode")
    mode = os.stat(backend.control.path).st_mode & 0o777
    assert mode == 0o600
    with backend.frontend() as fe:
        fe.tx(1, [net.make_frame(64)] * 10)
        assert len(fe.wait_used(1, 10)) == 10
        assert wait_for(lambda: backend.queue_stats(1)["hist"]["1"] >= 1)


def test_rx_write_flag_and_gpa_translation(short_tmp: Path) -> None:
    """A read-only RX buffer is refused and returned with len 0; the next good one is used."""
    with start_backend(short_tmp, "echo") as r, r.frontend() as fe:
        a = fe.alloc(2048)
        fe.add_chain(0, [(a, 2048, 0)])  # read-only: wrong for RX
        b = fe.alloc(2048)
        fe.add_chain(0, [(b, 2048, F_WRITE)])
        fe.tx(1, [net.make_frame(64)] * 2)
        used = fe.wait_used(0, 2)
        assert (0, 0) in used and any(ln == 76 for _, ln in used)
        assert b >= GPA
        assert wait_for(lambda: r.queue_stats(0)["drops"].get("bad_descriptor") == 1)


def test_client_mode_connects_and_reconnects(short_tmp: Path) -> None:
    """--connect: the front-end listens; the back-end connects, and reconnects to the next listener."""
    import socket
    import threading

    from tests.backend.frontend import Frontend
    from vhtune.backend.daemon import BackendConfig, Daemon
    from vhtune.backend.ports import parse_port
    from vhtune.backend.stats import Tunables

    path = str(short_tmp / "fe.sock")
    cfg = BackendConfig(socket=path, port=parse_port("sink"), client=True, tunables=Tunables())
    d = Daemon(cfg)
    th = threading.Thread(target=d.run, daemon=True)
    th.start()
    try:
        for k in range(2):
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(path)
            srv.listen(1)
            srv.settimeout(5)
            conn, _ = srv.accept()  # the back-end retries every 0.2 s until a listener exists
            srv.close()  # else the back-end's reconnect after this session would queue in the backlog
            os.unlink(path)
            with Frontend(conn) as fe:
                fe.start()
                fe.tx(1, [net.make_frame(64)] * 8)
                assert len(fe.wait_used(1, 8)) == 8, f"cycle {k}"
            assert wait_for(lambda: not d.connected)
        assert d.sessions == 2 and d.stats[1].packets == 16
    finally:
        d.request_stop()
        th.join(10)
    assert not th.is_alive()


def test_qemu_order_enable_before_set_features(backend: Running) -> None:
    """QEMU 7.2 sends SET_VRING_ENABLE (and SET_VRING_CALL) right after SET_PROTOCOL_FEATURES, before
    SET_FEATURES; protocol features are in use from SET_PROTOCOL_FEATURES on."""
    with backend.connect() as fe:
        feats = fe.get_u64(Req.GET_FEATURES)
        p = fe.get_u64(Req.GET_PROTOCOL_FEATURES)
        fe.send(Req.SET_PROTOCOL_FEATURES, m.U64.pack(p))
        assert fe.get_u64(Req.GET_QUEUE_NUM) == 1
        fe.send(Req.SET_OWNER)
        call = os.eventfd(0, os.EFD_NONBLOCK)
        fe.send(Req.SET_VRING_CALL, m.U64.pack(0), [call])
        os.close(call)
        for q in (0, 1):
            fe.send(Req.SET_VRING_ENABLE, m.VRING_STATE.pack(q, 0), flags=m.VERSION | m.FLAG_NEED_REPLY)
            assert fe.recv_reply()[2] == m.U64.pack(0)
        fe.send(Req.SET_FEATURES, m.U64.pack(feats))
        fe.features = feats
        fe.set_mem_table()
        fe.setup_queue(0)
        fe.setup_queue(1)
        fe.tx(1, [net.make_frame(64)] * 4)
        assert len(fe.wait_used(1, 4)) == 4


def test_call_fd_swapped_on_a_running_ring(backend: Running) -> None:
    """QEMU re-sends SET_VRING_CALL on running rings (interrupt masking): signals go to the newest fd."""
    with backend.frontend() as fe:
        for _ in range(20):
            new = os.eventfd(0, os.EFD_NONBLOCK)
            fe.send(Req.SET_VRING_CALL, m.U64.pack(1), [new])
            os.close(fe.call.pop(1))
            fe.call[1] = new
            fe.tx(1, [net.make_frame(64)] * 4)
            assert len(fe.wait_used(1, 4)) == 4
        fe.sync()
        # EVENT_IDX: used_event 0 was crossed once; the last fd gets signals from the next crossing.
        _, a, _ = fe.ring_addrs(1, 256)
        struct.pack_into("<H", fe.mm, a + 4 + 2 * 256, fe.avail_idx[1])
        fe.tx(1, [net.make_frame(64)])
        assert len(fe.wait_used(1, 1)) == 1
        assert wait_for(lambda: eventfd_count(fe.call[1]) >= 1)


def test_kick_without_fd_polls_the_ring(backend: Running) -> None:
    """SET_VRING_KICK with the no-fd bit (8): the worker polls avail.idx instead of sleeping on an eventfd."""
    with backend.frontend(queues=(0,)) as fe:
        d, a, u = fe.ring_addrs(1, 256)
        fe.num[1], fe.avail_idx[1], fe.used_seen[1], fe.free_head[1] = 256, 0, 0, 0
        fe.send(Req.SET_VRING_NUM, m.VRING_STATE.pack(1, 256))
        fe.send(Req.SET_VRING_BASE, m.VRING_STATE.pack(1, 0))
        from tests.backend.frontend import UVA

        fe.send(Req.SET_VRING_ADDR, m.VRING_ADDR.pack(1, 0, UVA + d, UVA + u, UVA + a, 0))
        fe.send(Req.SET_VRING_KICK, m.U64.pack(1 | m.VRING_NOFD_MASK))
        fe.send(Req.SET_VRING_ENABLE, m.VRING_STATE.pack(1, 1))
        fe.sync()
        assert backend.control.queues()[1]["running"] and backend.control.queues()[1]["kick_fd"] is None
        fe.tx(1, [net.make_frame(64)] * 5, kick=False)
        assert len(fe.wait_used(1, 5)) == 5


def test_worker_affinity_follows_the_cpus_tunable(backend: Running) -> None:
    with backend.frontend() as fe:
        fe.sync()
        tid = backend.control.queues()[1]["tid"]
        assert tid
        for cpus in ([1], [0], [0, 1]):
            backend.control.set(cpus=cpus)
            fe.tx(1, [net.make_frame(64)])  # the worker applies it on its next loop
            fe.wait_used(1, 1)
            assert wait_for(lambda: os.sched_getaffinity(tid) == set(cpus))  # noqa: B023
        # A per-queue override wins over the common list; JSON keys are strings.
        t = backend.control.set(queue_cpus={"1": [1]}, cpus=[0])
        assert t["queue_cpus"] == {"1": [1]}
        fe.tx(1, [net.make_frame(64)])
        fe.wait_used(1, 1)
        assert wait_for(lambda: os.sched_getaffinity(tid) == {1})
        from vhtune.errors import VhtuneError

        with pytest.raises(VhtuneError, match="not a queue index"):
            backend.control.set(queue_cpus={"x": [0]})
