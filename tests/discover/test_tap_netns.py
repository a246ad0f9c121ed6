"""Taps of the same name in different network namespaces: the netns a tun fd's device lives in comes from the
kernel (TUNGETDEVNETNS on a pidfd_getfd copy of the fd), not from the holder's netns or a lookup by name."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.discover.fakeproc import ROOT_NS, FakeHost, FakeProc, FakeThread
from vhtune.discover import NetnsRef, discover
from vhtune.discover.taps import TunFd, assemble_taps, device_netns
from vhtune.lab import hygiene
from vhtune.lab import netns as labnetns
from vhtune.lab.names import lab_name

QEMU_ARGV = ["qemu-system-x86_64", "-accel", "kvm", "-name", "vm0,debug-threads=on"]


def _qemu(h: FakeHost, netns: int = ROOT_NS) -> FakeProc:
    threads = [FakeThread(1000, "qemu-system-x86"), FakeThread(1001, "CPU 0/KVM")]
    return h.proc(1000, "qemu-system-x86", QEMU_ARGV, threads=threads, netns=netns)


def _answers(table: dict[tuple[int, int], int]) -> Callable[[int, Sequence[int]], dict[int, int]]:
    """A ``tun_netns`` seam answering from (pid, fd) → device netns inode, as the kernel would."""
    return lambda pid, fds: {fd: table[pid, fd] for fd in fds if (pid, fd) in table}


def test_tap_held_from_another_netns_is_read_where_its_device_lives(tmp_path: Path) -> None:
    """QEMU in netns blue holds a tap created in red; blue has its own, unrelated tap of that name."""
    h = FakeHost(tmp_path)
    blue, red = h.netns("blue"), h.netns("red")
    q = _qemu(h, blue)
    h.tun(q, 20, "tap0")
    h.tap_link(blue, "tap0", 7, txqlen=100)
    h.tap_link(red, "tap0", 9, txqlen=900)
    snap = discover(h.write(), tun_netns=_answers({(1000, 20): red}))
    (tap,) = snap.taps
    assert (tap.name, tap.netns, tap.ifindex, tap.txqueuelen, tap.owner_pids) == ("tap0", "red", 9, 900, (1000,))
    assert snap.problems == []


def test_one_process_holding_same_named_taps_of_two_netns_sees_two_taps(tmp_path: Path) -> None:
    h = FakeHost(tmp_path)
    blue, red = h.netns("blue"), h.netns("red")
    d = h.proc(2000, "tapd", ["tapd"])  # in the root netns, setns()-ed to create each tap
    h.tun(d, 5, "tap0")
    h.tun(d, 6, "tap0")
    h.tun(d, 7, "tap0")
    h.tap_link(blue, "tap0", 3, txqlen=300)
    h.tap_link(red, "tap0", 4, txqlen=400, mq=True)
    snap = discover(h.write(), tun_netns=_answers({(2000, 5): blue, (2000, 6): red, (2000, 7): red}))
    got = [(t.name, t.netns, t.ifindex, t.txqueuelen, t.queues, t.owner_pids) for t in snap.taps]
    assert got == [("tap0", "blue", 3, 300, 1, (2000,)), ("tap0", "red", 4, 400, 2, (2000,))]
    assert snap.problems == []


def test_without_an_answer_the_name_is_looked_up_owner_netns_first(tmp_path: Path) -> None:
    """A fake tree's pids are not this host's: no kernel question is asked, and discovery works as before."""
    h = FakeHost(tmp_path)
    blue, red = h.netns("blue"), h.netns("red")
    q = _qemu(h, blue)
    h.tun(q, 20, "tap0")
    h.tap_link(red, "tap0", 9)
    h.tap_link(blue, "tap0", 7)
    (tap,) = discover(h.write()).taps
    assert (tap.netns, tap.ifindex) == ("blue", 7)


def test_permission_refused_is_one_problem_per_pid_and_name_lookup_still_works(tmp_path: Path) -> None:
    h = FakeHost(tmp_path)
    blue = h.netns("blue")
    q = _qemu(h, blue)
    h.tun(q, 20, "tap0")
    h.tun(q, 21, "tap0")
    h.tap_link(blue, "tap0", 7)
    gone = h.proc(1100, "tapd", ["tapd"])
    h.tun(gone, 3, "tap1")
    h.tap_link(ROOT_NS, "tap1", 2)
    asked: list[int] = []

    def kernel(pid: int, fds: Sequence[int]) -> dict[int, int]:
        asked.append(pid)
        if pid == 1000:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        raise ProcessLookupError(errno.ESRCH, "No such process")  # exited meanwhile: silent

    snap = discover(h.write(), tun_netns=kernel)
    assert sorted(asked) == [1000, 1100]  # once per pid, not per fd
    got = [(t.name, t.netns, t.ifindex, t.queues) for t in snap.taps]
    assert got == [("tap0", "blue", 7, 2), ("tap1", "root", 2, 1)]
    (problem,) = snap.problems
    assert "pid 1000" in problem and "operation not permitted" in problem


def test_device_netns_nobody_can_list_is_named_not_guessed(tmp_path: Path) -> None:
    """The kernel names a netns no process is in and no /run/netns name reaches: the same name in the holder's
    netns is not taken for it."""
    h = FakeHost(tmp_path)
    q = _qemu(h)
    h.tun(q, 20, "tap0")
    h.tap_link(ROOT_NS, "tap0", 2)
    snap = discover(h.write(), tun_netns=_answers({(1000, 20): 4026532999}))
    (tap,) = snap.taps
    assert (tap.netns, tap.ifindex) == ("net:[4026532999]", None)
    assert any("tap0" in p and "net:[4026532999]" in p for p in snap.problems)


def test_answered_and_unanswered_fds_of_one_tap_stay_one_tap() -> None:
    """An fd the kernel answered for and one looked up by name that land on the same device are one tap."""
    ns = {ROOT_NS: NetnsRef(ROOT_NS, "root", None, None, True), 5: NetnsRef(5, "blue", "blue", 1000, False)}
    links = {5: {"tap0": {"ifindex": 3, "ifname": "tap0", "linkinfo": {"info_kind": "tun"}}}}
    fds = [TunFd(1000, 20, "tap0", 5, dev_netns=5), TunFd(1200, 4, "tap0", 5)]
    problems: list[str] = []
    (tap,) = assemble_taps(fds, ns, ROOT_NS, lambda ref: links.get(ref.inode, {}), problems)
    assert (tap.netns, tap.ifindex, tap.owner_pids, tap.queues, problems) == ("blue", 3, (1000, 1200), 2, [])


# --- the real kernel -----------------------------------------------------------------------------------------
CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int), include/uapi/linux/if_tun.h
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _open_tap_in(netns: str, ifname: str) -> int:
    """A tap ``ifname`` created inside ``netns`` by a tun fd this process keeps (closing it deletes the tap).

    setns() moves only the calling thread, so a short-lived thread joins the netns, opens /dev/net/tun with
    TUNSETIFF and goes back home before it ends: Thread.join() may return before the kernel task has dropped
    its nsproxy, and a task still in the foreign netns would keep it alive (see vhtune/probes/netdev.py)."""
    out: list[int] = []
    err: list[BaseException] = []

    def body() -> None:
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                nsfd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(nsfd)
                finally:
                    os.close(nsfd)
                try:
                    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
                    try:
                        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TAP | IFF_NO_PI))
                    except BaseException:
                        os.close(fd)
                        raise
                    out.append(fd)
                finally:
                    _setns(home)
            finally:
                os.close(home)
        except BaseException as e:  # handed to the caller
            err.append(e)

    t = threading.Thread(target=body, name="vhtune-test-tap")
    t.start()
    t.join()
    if err:
        for fd in out:
            os.close(fd)
        raise err[0]
    return out[0]


def _ifindex(ns: labnetns.Netns, ifname: str) -> int:
    (link,) = [li for li in labnetns.links(ns.name) if li.get("ifname") == ifname]
    return int(str(link["ifindex"]))


def test_real_same_named_taps_in_two_netns_held_by_this_process(require_root: None) -> None:
    before = hygiene.snapshot(os.getpid(), own_only=True)
    tap = lab_name("t")
    me = os.getpid()
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(labnetns.Netns())
        b = stack.enter_context(labnetns.Netns())
        labnetns.tap(a, lab_name("t"))  # one more link in a: a's tap gets another ifindex than b's
        for ns, qlen in ((a, "321"), (b, "654")):
            fd = _open_tap_in(ns.name, tap)
            stack.callback(os.close, fd)  # closed before the namespaces are deleted (LIFO)
            ns.ip("link", "set", "dev", tap, "txqueuelen", qlen)
        truth = {a.name: _ifindex(a, tap), b.name: _ifindex(b, tap)}
        assert truth[a.name] != truth[b.name]
        snap = discover(guest_memory_numa=False)
        mine = sorted((t for t in snap.taps if t.name == tap), key=lambda t: t.netns)
        got = [(t.netns, t.ifindex, t.txqueuelen, t.owner_pids, t.queues) for t in mine]
        want = sorted([(a.name, truth[a.name], 321, (me,), 1), (b.name, truth[b.name], 654, (me,), 1)])
        assert got == want, snap.problems
        assert not [p for p in snap.problems if tap in p or f"pid {me}" in p]
    after = hygiene.snapshot(os.getpid(), own_only=True)
    assert not any(set(after[k]) - set(before[k]) for k in after), f"left behind: {after}"


def test_real_tap_moved_away_is_found_where_it_went_not_under_its_name_where_it_was_made(require_root: None) -> None:
    """Made in a, moved to b (``ip link set netns``), and a new tap of the same name made in a: the fd's device
    is b's (TUNGETDEVNETNS follows the move; the fd's own socket stays in a)."""
    before = hygiene.snapshot(os.getpid(), own_only=True)
    tap = lab_name("t")
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(labnetns.Netns())
        b = stack.enter_context(labnetns.Netns())
        fd = _open_tap_in(a.name, tap)
        stack.callback(os.close, fd)
        a.ip("link", "set", "dev", tap, "netns", b.name)
        labnetns.tap(a, tap)  # persistent, held by nobody: dies with a
        snap = discover(guest_memory_numa=False)
        (mine,) = [t for t in snap.taps if t.name == tap]
        assert (mine.netns, mine.ifindex, mine.owner_pids) == (b.name, _ifindex(b, tap), (os.getpid(),))
    after = hygiene.snapshot(os.getpid(), own_only=True)
    assert not any(set(after[k]) - set(before[k]) for k in after), f"left behind: {after}"


def test_real_device_netns_answers_only_for_attached_taps(require_root: None) -> None:
    """A detached tun fd (EBADFD), a non-tun fd (ENOTTY) and a closed fd number (EBADF) get no answer, silently."""
    with contextlib.ExitStack() as stack:
        ns = stack.enter_context(labnetns.Netns())
        attached = _open_tap_in(ns.name, lab_name("t"))
        stack.callback(os.close, attached)
        detached = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        stack.callback(os.close, detached)
        other = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        stack.callback(os.close, other)
        closed = os.dup(other)
        os.close(closed)
        got = device_netns(os.getpid(), [attached, detached, other, closed])
        assert got == {attached: os.stat(f"/run/netns/{ns.name}").st_ino}


def test_real_device_netns_of_an_exited_process_raises_process_lookup() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    with pytest.raises(ProcessLookupError):
        device_netns(pid, [3])
