"""discover() against fake /proc + /sys trees: libvirt, hand-written and TCG QEMU command lines, vhost-user
client and server sockets, taps passed as fds with vhostfds, multiqueue taps, taps in another netns."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.discover.fakeproc import ROOT_NS, FakeHost, FakeThread, UnixSock, argv_fixture
from vhtune.discover import (
    ROLE_BACKEND,
    ROLE_FRONTEND,
    ROLE_OTHER,
    ROLE_VCPU,
    ROLE_VHOST_WORKER,
    ROLE_VMM,
    Snapshot,
    ThreadInfo,
    VMInfo,
    discover,
)

GUEST_NUMA_MAPS = (
    "7f0000000000 bind:1 file=/memfd:memory-backend-memfd\\040(deleted) dirty=1000 N1=1000 kernelpagesize_kB=4\n"
    "55aa00000000 default heap anon=50 dirty=50 N0=50 kernelpagesize_kB=4\n"
)


def _vm(snap: Snapshot, pid: int) -> VMInfo:
    return next(v for v in snap.vms if v.pid == pid)


def _thread(snap: Snapshot, tid: int) -> ThreadInfo:
    return next(t for t in snap.threads if t.tid == tid)


@pytest.fixture
def libvirt_host(tmp_path: Path) -> Path:
    """libvirt-generated QEMU (JSON -netdev): multiqueue tap passed as fds with vhostfds (vhost-net kernel
    threads), vhost-user with QEMU as server and OVS-DPDK as the connecting back-end; two NUMA nodes."""
    h = FakeHost(tmp_path, nodes={0: "0-1", 1: "2-3"})
    q = h.proc(
        1000,
        "qemu-system-x86",
        argv_fixture("libvirt-json.args"),
        threads=[
            FakeThread(1000, "qemu-system-x86", "0-3", 0),
            FakeThread(1001, "CPU 0/KVM", "2-3", 2),
            FakeThread(1002, "CPU 1/KVM", "2-3", 3),
            FakeThread(1003, "IO mon_iothread", "0-3", 1),
        ],
        numa_maps=GUEST_NUMA_MAPS,
    )
    h.tun(q, 30, "vnet0")
    h.tun(q, 31, "vnet0")
    q.fds[32] = q.fds[33] = "/dev/vhost-net"
    h.eventfd(q, 40, ident=7, count=3)
    h.eventfd(q, 41, ident=8)
    h.sock(q, 27, UnixSock(4000, "/var/lib/libvirt/qemu/domain-3-web01/monitor.sock", listening=True))
    ovs_end = h.serve(q, "/var/run/openvswitch/vhu-web01", fds=(50, 51), inode=5001)
    for kpid in (1100, 1101):
        h.proc(kpid, "vhost-1000", [], threads=[FakeThread(kpid, "vhost-1000", "0-3", 1)])
    ovs = h.proc(
        2000,
        "ovs-vswitchd",
        ["ovs-vswitchd", "unix:/var/run/openvswitch/db.sock", "--pidfile", "--detach"],
        threads=[
            FakeThread(2000, "ovs-vswitchd", "0-1", 0),
            FakeThread(2001, "pmd-c02/id:5", "2", 2, policy=1, rt_priority=20),  # chrt -f 20
            FakeThread(2002, "pmd-c03/id:6", "3", 3),
            FakeThread(2003, "handler1", "0-1", 1, nice=-5),
        ],
    )
    h.sock(ovs, 60, ovs_end)
    h.eventfd(ovs, 61, ident=7, count=3)
    h.proc(1, "systemd", ["/sbin/init"])
    h.tap_link(ROOT_NS, "vnet0", 12, mq=True)
    return h.write()


def test_libvirt_vm_threads_memory_and_numa(libvirt_host: Path) -> None:
    snap = discover(libvirt_host)
    assert snap.hostname == "fakehost" and snap.kernel == "6.18.0-fake"
    assert [(c.cpu, c.node) for c in snap.cpus] == [(0, 0), (1, 0), (2, 1), (3, 1)]
    vm = _vm(snap, 1000)
    assert (vm.name, vm.uuid, vm.memory_mib, vm.accel, vm.netns) == (
        "web01",
        "5b1e3c9a-7d0f-4c1e-9a55-2f6f0c1d9e01",
        4096,
        "kvm",
        "root",
    )
    assert vm.vcpu_tids == [1001, 1002]
    cpu1 = _thread(snap, 1002)
    assert (cpu1.role, cpu1.vcpu_index, cpu1.affinity, cpu1.last_cpu, cpu1.numa_node) == (
        ROLE_VCPU,
        1,
        (2, 3),
        3,
        1,
    )
    assert _thread(snap, 1003).role == ROLE_VMM
    assert (cpu1.policy, cpu1.rt_priority, cpu1.nice) == ("other", 0, 0)
    # Guest RAM is the memfd backend mapping (node 1); QEMU's heap on node 0 is not guest memory.
    assert vm.memory_kib_by_node == {1: 4000}
    assert vm.memory_nodes == [1]
    assert snap.problems == []


def test_thread_scheduling_from_stat(libvirt_host: Path) -> None:
    snap = discover(libvirt_host)
    pmd, handler = _thread(snap, 2001), _thread(snap, 2003)
    assert (pmd.policy, pmd.rt_priority, pmd.nice) == ("fifo", 20, 0)
    assert (handler.policy, handler.rt_priority, handler.nice) == ("other", 0, -5)


def test_libvirt_tap_from_fds_with_vhost_net(libvirt_host: Path) -> None:
    snap = discover(libvirt_host)
    vm = _vm(snap, 1000)
    tapnd = vm.netdevs[0]
    assert (tapnd.ifname, tapnd.vhost, tapnd.queues) == ("vnet0", True, 2)
    (tap,) = snap.taps
    assert (tap.name, tap.owner_pids, tap.queues, tap.netns, tap.ifindex) == ("vnet0", (1000,), 2, "root", 12)
    assert (tap.multi_queue, tap.vnet_hdr, tap.txqueuelen) == (True, True, 1000)
    assert tap.stats["rx_dropped"] == 1 and tap.stats["tx_packets"] == 20
    assert vm.vhost_tids == [1100, 1101]
    assert all(_thread(snap, t).role == ROLE_VHOST_WORKER for t in vm.vhost_tids)
    vhost_net = next(b for b in snap.backends if b.kind == "vhost-net")
    assert (vhost_net.pid, vhost_net.thread_tids) == (1000, [1100, 1101])


def test_libvirt_qemu_server_socket_paired_with_ovs(libvirt_host: Path) -> None:
    snap = discover(libvirt_host)
    (sock,) = snap.sockets
    assert (sock.path, sock.netdev_id, sock.qemu_server) == ("/var/run/openvswitch/vhu-web01", "hostnet1", True)
    assert (sock.listener_pid, sock.vm_pid, sock.backend_pid, sock.connected) == (1000, 1000, 2000, True)
    ovs = next(b for b in snap.backends if b.pid == 2000)
    assert (ovs.kind, ovs.thread_tids, ovs.frontend_pids) == ("ovs", [2001, 2002], [1000])
    pmd = _thread(snap, 2001)
    assert (pmd.role, pmd.affinity, pmd.numa_node) == (ROLE_BACKEND, (2,), 1)
    assert _thread(snap, 2003).role != ROLE_BACKEND
    # The same eventfd (id 7) is open in QEMU and OVS: a kick/call shared by both ends.
    shared = {(e.pid, e.fd, e.count) for e in snap.eventfds if e.eventfd_id == 7}
    assert shared == {(1000, 40, 3), (2000, 61, 3)}


@pytest.fixture
def dpdk_host(tmp_path: Path) -> Path:
    """Hand-written QEMU as vhost-user client of a listening DPDK testpmd; a vhost=on tap moved into netns
    "blue" (no process there); vhost-net as a vhost_task thread inside QEMU (Linux >= 6.4)."""
    h = FakeHost(tmp_path)
    blue = h.netns("blue")
    q = h.proc(
        3000,
        "qemu-system-x86",
        argv_fixture("hand-written.args"),
        threads=[
            FakeThread(3000, "qemu-system-x86"),
            FakeThread(3001, "CPU 0/KVM", "0", 0),
            FakeThread(3002, "CPU 1/KVM", "1", 1),
            FakeThread(3003, "vhost-3000", "0-3", 3),
        ],
    )
    h.tun(q, 20, "tap-hw0")
    tp = h.proc(
        4000,
        "dpdk-testpmd",
        ["dpdk-testpmd", "-l", "0-2", "--vdev", "net_vhost0,iface=/run/vu0.sock,queues=2", "--", "-i"],
        threads=[
            FakeThread(4000, "dpdk-testpmd", "0", 0),
            FakeThread(4001, "eal-intr-thread", "0", 0),
            FakeThread(4002, "rte-worker-1", "1", 1),
            FakeThread(4003, "rte-worker-2", "2", 2),
        ],
    )
    h.sock(q, 21, h.serve(tp, "/run/vu0.sock", fds=(10, 11), inode=7000))
    h.tap_link(ROOT_NS, "eth0", 2)  # a same-netns decoy that is not the tap
    h.tap_link(blue, "tap-hw0", 5, mq=False, txqlen=500)
    return h.write()


def test_hand_written_client_socket_paired_with_listening_dpdk(dpdk_host: Path) -> None:
    snap = discover(dpdk_host)
    (sock,) = snap.sockets
    assert (sock.path, sock.qemu_server, sock.connected) == ("/run/vu0.sock", False, True)
    assert (sock.listener_pid, sock.backend_pid, sock.vm_pid, sock.peer_pids) == (4000, 4000, 3000, (4000,))
    dpdk = next(b for b in snap.backends if b.pid == 4000)
    assert (dpdk.kind, dpdk.thread_tids) == ("dpdk", [4002, 4003])
    assert [_thread(snap, t).queue for t in dpdk.thread_tids] == [1, 2]
    assert _thread(snap, 4001).role != ROLE_BACKEND


def test_tap_found_in_named_netns_and_vhost_task(dpdk_host: Path) -> None:
    snap = discover(dpdk_host)
    (tap,) = snap.taps
    assert (tap.name, tap.netns, tap.ifindex, tap.txqueuelen, tap.multi_queue, tap.queues) == (
        "tap-hw0",
        "blue",
        5,
        500,
        False,
        1,
    )
    vm = _vm(snap, 3000)
    assert vm.vhost_tids == [3003] and _thread(snap, 3003).role == ROLE_VHOST_WORKER
    assert (vm.accel, vm.memory_mib, vm.vcpu_tids) == ("kvm", 2048, [3001, 3002])
    assert snap.problems == []


@pytest.fixture
def mixed_host(tmp_path: Path) -> Path:
    """A TCG QEMU without debug-threads listening on a socket nobody connected to, a tap that is in no
    visible netns, and vhtune's back-end serving a DPDK virtio-user front-end (no VM involved)."""
    h = FakeHost(tmp_path, online="0-1")
    q = h.proc(
        5000,
        "qemu-system-x86",
        argv_fixture("tcg-no-debug-threads.args"),
        threads=[FakeThread(t, "qemu-system-x86", "0-1") for t in (5000, 5001, 5002)],
    )
    h.sock(q, 8, UnixSock(8001, "/tmp/srv.sock", listening=True))
    h.tun(q, 9, "tapnic0")
    be = h.proc(
        6000,
        "vhtune",
        ["/opt/vhtune/.venv/bin/python3", "/opt/vhtune/.venv/bin/vhtune", "backend", "--socket", "/tmp/vh.sock"],
        threads=[
            FakeThread(6000, "vhtune", "0-1"),
            FakeThread(6001, "vhtune-q0", "1", 1),
            FakeThread(6002, "vhtune-q1", "1", 1),
        ],
    )
    fe_end = h.serve(be, "/tmp/vh.sock", fds=(5, 6), inode=9000)
    fe = h.proc(
        7000,
        "dpdk-testpmd",
        ["dpdk-testpmd", "--no-pci", "--vdev", "net_virtio_user0,path=/tmp/vh.sock,queues=2", "--", "-i"],
        threads=[FakeThread(7000, "dpdk-testpmd", "0"), FakeThread(7001, "rte-worker-0", "0")],
    )
    h.sock(fe, 3, fe_end)
    return h.write()


def test_unconnected_server_socket_tcg_and_missing_debug_threads(mixed_host: Path) -> None:
    snap = discover(mixed_host)
    vm = _vm(snap, 5000)
    assert (vm.name, vm.accel, vm.memory_mib, vm.vcpu_tids, vm.debug_threads) == ("plain", "tcg", 512, [], False)
    srv = next(s for s in snap.sockets if s.path == "/tmp/srv.sock")
    assert (srv.listener_pid, srv.connected, srv.backend_pid, srv.qemu_server) == (5000, False, None, True)
    assert any("debug-threads=on" in p and "5000" in p for p in snap.problems)
    assert any("tapnic0" in p and "not found" in p for p in snap.problems)
    (tap,) = snap.taps
    assert (tap.name, tap.owner_pids, tap.ifindex) == ("tapnic0", (5000,), None)


def test_vhtune_backend_with_virtio_user_frontend(mixed_host: Path) -> None:
    snap = discover(mixed_host)
    s = next(s for s in snap.sockets if s.path == "/tmp/vh.sock")
    assert (s.backend_pid, s.frontend_pid, s.listener_pid, s.vm_pid, s.connected) == (6000, 7000, 6000, None, True)
    be = next(b for b in snap.backends if b.pid == 6000)
    assert (be.kind, be.thread_tids, be.frontend_pids) == ("vhtune", [6001, 6002], [7000])
    assert [_thread(snap, t).queue for t in be.thread_tids] == [0, 1]
    # The front-end is not a back-end even though it runs DPDK lcores.
    assert 7000 not in {b.pid for b in snap.backends}


def test_libvirt_passed_socket_fd_and_single_threaded_backend(tmp_path: Path) -> None:
    h = FakeHost(tmp_path)
    q = h.proc(
        8000,
        "qemu-kvm",
        argv_fixture("libvirt-classic.args"),
        threads=[FakeThread(8000, "qemu-kvm"), *(FakeThread(8001 + i, f"CPU {i}/KVM") for i in range(4))],
    )
    for fd in (26, 28):
        h.tun(q, fd, "vnet7")
    d = h.proc(8100, "my-vhost-daemon", ["/usr/sbin/my-vhost-daemon", "--socket", "/var/lib/vhost/db02.sock"])
    h.sock(q, 34, h.serve(d, "/var/lib/vhost/db02.sock", fds=(4, 5), inode=9500))
    h.tap_link(ROOT_NS, "vnet7", 9, mq=True)
    snap = discover(h.write())
    vm = _vm(snap, 8000)
    tapnd, vund = vm.netdevs
    assert (tapnd.ifname, tapnd.queues, vund.socket_path) == ("vnet7", 2, "/var/lib/vhost/db02.sock")
    assert vm.vcpu_tids == [8001, 8002, 8003, 8004] and vm.accel == "kvm"
    (sock,) = snap.sockets
    assert (sock.backend_pid, sock.listener_pid, sock.connected) == (8100, 8100, True)
    be = next(b for b in snap.backends if b.pid == 8100)
    # No thread carries a data-path name: the daemon's only thread is its data path.
    assert (be.kind, be.thread_tids) == ("unknown", [8100])
    assert snap.taps[0].queues == 2


def test_backend_found_from_virtio_user_frontend_whatever_its_command_line(tmp_path: Path) -> None:
    """vhtune's back-end running inside a test process: nothing in its argv says back-end; the DPDK
    virtio-user front-end names the socket, and the back-end is whoever holds the other end."""
    h = FakeHost(tmp_path)
    fe = h.proc(
        7000,
        "dpdk-testpmd",
        ["dpdk-testpmd", "--vdev", "net_virtio_user0,path=/tmp/t.sock,server=1", "--", "-i"],
        threads=[FakeThread(7000, "dpdk-testpmd"), FakeThread(7001, "rte-worker-1", "1", 1)],
    )
    be_end = h.serve(fe, "/tmp/t.sock", fds=(3, 4), inode=9100)
    be = h.proc(
        6500,
        "python",
        ["/usr/bin/python3", "-m", "pytest", "tests/backend"],
        threads=[FakeThread(6500, "python"), FakeThread(6501, "vhtune-ctl"), FakeThread(6502, "vhtune-q1", "0", 0)],
    )
    h.sock(be, 7, be_end)
    snap = discover(h.write())
    (s,) = snap.sockets
    assert (s.frontend_pid, s.backend_pid, s.listener_pid, s.connected, s.vm_pid) == (7000, 6500, 7000, True, None)
    (b,) = snap.backends
    assert (b.pid, b.kind, b.thread_tids, b.frontend_pids) == (6500, "vhtune", [6502], [7000])


@pytest.fixture
def frontend_host(tmp_path: Path) -> Path:
    """vhtune's back-end (worker on CPU 1) serving testpmd's virtio-user front-end started with ``-l 0,1`` (main
    lcore and EAL control threads pinned to CPU 0, the forwarding lcore ``rte-worker-1`` to CPU 1), a Python
    front-end of testpmd's vhost PMD back-end, and a virtio-user process whose socket nobody serves."""
    h = FakeHost(tmp_path, online="0-1")
    be = h.proc(
        6000,
        "vhtune",
        ["/usr/bin/python3", "-m", "vhtune", "backend", "--socket", "/tmp/vh.sock", "--port", "sink"],
        threads=[FakeThread(6000, "vhtune", "0-1"), FakeThread(6001, "vhtune-q0", "1", 1)],
    )
    fe_end = h.serve(be, "/tmp/vh.sock", fds=(5, 6), inode=9000)
    h.eventfd(be, 30, ident=51)  # the kick eventfd the front-end passed with SET_VRING_KICK
    fe = h.proc(
        7000,
        "dpdk-testpmd",
        ["dpdk-testpmd", "-l", "0,1", "--no-pci", "--vdev", "net_virtio_user0,path=/tmp/vh.sock", "--", "-i"],
        threads=[
            FakeThread(7000, "dpdk-testpmd", "0", 0),
            FakeThread(7001, "eal-intr-thread", "0", 0),
            FakeThread(7002, "rte_mp_handle", "0", 0),
            FakeThread(7003, "rte-worker-1", "1", 1),
        ],
    )
    h.sock(fe, 3, fe_end)
    h.eventfd(fe, 20, ident=51)
    vhost_pmd = h.proc(
        8000,
        "dpdk-testpmd",
        ["dpdk-testpmd", "-l", "0,1", "--no-pci", "--vdev", "net_vhost0,iface=/tmp/py.sock", "--", "-i"],
        threads=[FakeThread(8000, "dpdk-testpmd", "0"), FakeThread(8001, "rte-worker-1", "1", 1)],
    )
    py_end = h.serve(vhost_pmd, "/tmp/py.sock", fds=(5, 6), inode=9010)
    py = h.proc(9000, "python3", ["python3", "frontend.py"], threads=[FakeThread(9000, "python3", "0-1")])
    py.threads.append(FakeThread(9001, "python3", "0-1"))
    h.sock(py, 3, py_end)
    h.proc(
        9500,
        "dpdk-testpmd",
        ["dpdk-testpmd", "--vdev", "net_virtio_user0,path=/tmp/nobody.sock", "--", "-i"],
        threads=[FakeThread(9500, "dpdk-testpmd", "0"), FakeThread(9501, "rte-worker-1", "1", 1)],
    )
    return h.write()


def test_virtio_user_frontend_lcores_listed_with_their_affinity(frontend_host: Path) -> None:
    """A front-end's lcore spins on its CPU like a back-end worker does: discovery lists it (role, comm,
    affinity, lcore index) so the recorder watches it and the detectors know that CPU is taken."""
    snap = discover(frontend_host)
    lcore = _thread(snap, 7003)
    assert (lcore.pid, lcore.comm, lcore.role, lcore.affinity, lcore.last_cpu, lcore.queue) == (
        7000,
        "rte-worker-1",
        ROLE_FRONTEND,
        (1,),
        1,
        1,
    )
    # The main lcore and EAL's control threads are listed too (their CPU is what they are pinned to), as "other".
    assert [(t.tid, t.role, t.affinity) for t in snap.threads if t.pid == 7000 and t.tid != 7003] == [
        (7000, ROLE_OTHER, (0,)),
        (7001, ROLE_OTHER, (0,)),
        (7002, ROLE_OTHER, (0,)),
    ]
    be = next(b for b in snap.backends if b.pid == 6000)
    assert (be.thread_tids, be.frontend_pids) == ([6001], [7000])
    assert {b.pid for b in snap.backends} == {6000, 8000}  # front-ends are not back-ends, lcores or not
    assert {(e.pid, e.fd, e.eventfd_id) for e in snap.eventfds} >= {(6000, 30, 51), (7000, 20, 51)}
    # A front-end without data-path thread names: all of its threads carry its data path.
    assert [(t.tid, t.role) for t in snap.threads if t.pid == 9000] == [(9000, ROLE_FRONTEND), (9001, ROLE_FRONTEND)]
    # A virtio-user process connected to no back-end is on no data path.
    assert all(t.pid != 9500 for t in snap.threads)
    assert snap.problems == []


@pytest.mark.parametrize(("tight", "bound"), [("", "@vhu-a"), (",tight=off", "@vhu-a" + "@" * (107 - len("vhu-a")))])
def test_abstract_vhost_user_socket_is_paired(tmp_path: Path, tight: str, bound: str) -> None:
    """``-chardev socket,path=NAME,abstract=on`` (QEMU >= 5.1): the name lives in the abstract namespace, which
    /proc/net/unix prints with a leading '@' (and, with tight=off, the NUL padding of sun_path as '@'s)."""
    h = FakeHost(tmp_path)
    argv = [
        "qemu-system-x86_64",
        "-name",
        "abs,debug-threads=on",
        "-chardev",
        f"socket,id=c0,path=vhu-a,abstract=on{tight}",
    ]
    q = h.proc(3000, "qemu-system-x86", [*argv, "-netdev", "vhost-user,id=n0,chardev=c0"])
    d = h.proc(4000, "my-vhost-daemon", ["/usr/sbin/my-vhost-daemon", "--abstract", "vhu-a"])
    h.sock(q, 21, h.serve(d, bound, fds=(10, 11), inode=7000))
    snap = discover(h.write())
    (sock,) = snap.sockets
    assert (sock.path, sock.vm_pid, sock.backend_pid, sock.listener_pid, sock.connected) == (
        bound,
        3000,
        4000,
        4000,
        True,
    )
    assert [b.pid for b in snap.backends] == [4000]


def test_relative_vhost_user_path_is_resolved_against_qemus_cwd(tmp_path: Path) -> None:
    """Two VMs started in their own directories with the same relative ``path=vu.sock``: each socket is the one
    in its QEMU's working directory, so the second VM (not connected yet) is not given the first one's back-end."""
    h = FakeHost(tmp_path)
    argv = ["qemu-system-x86_64", "-chardev", "socket,id=c0,path=vu.sock", "-netdev", "vhost-user,id=n0,chardev=c0"]
    q1 = h.proc(3000, "qemu-system-x86", argv)
    h.proc(3100, "qemu-system-x86", argv)
    a = h.proc(4000, "vhost-a", ["/usr/sbin/vhost-a", "--socket", "/srv/vm1/vu.sock"])
    b = h.proc(4100, "vhost-b", ["/usr/sbin/vhost-b", "--socket", "/srv/vm2/vu.sock"])
    h.sock(q1, 21, h.serve(a, "/srv/vm1/vu.sock", fds=(10, 11), inode=7000))
    h.sock(b, 10, UnixSock(7100, "/srv/vm2/vu.sock", listening=True))
    root = h.write()
    (root / "proc/3000/cwd").symlink_to("/srv/vm1")
    (root / "proc/3100/cwd").symlink_to("/srv/vm2")
    snap = discover(root)
    s1, s2 = sorted(snap.sockets, key=lambda s: s.vm_pid or 0)
    assert (s1.path, s1.vm_pid, s1.backend_pid, s1.connected) == ("/srv/vm1/vu.sock", 3000, 4000, True)
    assert (s2.path, s2.vm_pid, s2.listener_pid, s2.backend_pid, s2.connected) == (
        "/srv/vm2/vu.sock",
        3100,
        4100,
        4100,
        False,
    )
