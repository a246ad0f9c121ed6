"""Target selection from discovery snapshots (constructed here) and /proc, and role propagation."""

from __future__ import annotations

import os

import pytest

from vhtune.discover.model import (
    ROLE_BACKEND,
    ROLE_FRONTEND,
    ROLE_OTHER,
    ROLE_VCPU,
    ROLE_VMM,
    BackendInfo,
    EventfdInfo,
    Snapshot,
    TapInfo,
    ThreadInfo,
    VMInfo,
)
from vhtune.errors import UsageError
from vhtune.probes.targets import FdTarget, TargetSet
from vhtune.record.backend_ctl import propagate_roles
from vhtune.record.select import Selection, absent_taps, build, proc_eventfds, proc_threads


def _snap() -> Snapshot:
    return Snapshot(
        taken_at=0.0,
        hostname="h",
        kernel="k",
        vms=[VMInfo(pid=100, vcpu_tids=[101])],
        backends=[BackendInfo(pid=200, kind="dpdk", comm="dpdk-testpmd", thread_tids=[201])],
        threads=[
            ThreadInfo(100, 100, "qemu", ROLE_VMM),
            ThreadInfo(100, 101, "CPU 0/KVM", ROLE_VCPU),
            ThreadInfo(200, 201, "rte-worker-1", ROLE_BACKEND),
            ThreadInfo(300, 300, "bash", "other"),
        ],
        taps=[TapInfo("tap0", 7, "root", owner_pids=(100,)), TapInfo("tapX", 8, "ns1", owner_pids=(999,))],
        eventfds=[EventfdInfo(100, 20, 5), EventfdInfo(200, 30, 5), EventfdInfo(300, 3, 9)],
    )


def test_default_is_the_data_path_and_all_adds_vmm_threads() -> None:
    ts = build(_snap(), Selection())
    assert set(ts.threads) == {101, 201}
    assert ts.threads[101].role == ROLE_VCPU and ts.threads[201].comm == "rte-worker-1"
    assert set(ts.taps) == {("root", "tap0"), ("ns1", "tapX")}
    # held by the VM / by someone else
    assert ts.taps[("root", "tap0")].vm == "pid 100" and ts.taps[("ns1", "tapX")].vm is None
    assert set(ts.fds) == {(100, 20), (200, 30)}  # not bash's eventfd
    assert set(build(_snap(), Selection(all=True)).threads) == {100, 101, 201}


def test_a_virtio_user_frontends_lcore_is_on_the_data_path() -> None:
    """A DPDK virtio-user front-end (no VM): its lcore is recorded by default like a vCPU, its main thread and
    eventfds with --all and by default respectively, as for a VM."""
    snap = _snap()
    snap.backends.append(BackendInfo(pid=400, kind="vhtune", comm="vhtune", thread_tids=[401], frontend_pids=[500]))
    snap.threads += [
        ThreadInfo(400, 401, "vhtune-q0", ROLE_BACKEND, (1,)),
        ThreadInfo(500, 500, "dpdk-testpmd", ROLE_OTHER, (0,)),
        ThreadInfo(500, 503, "rte-worker-1", ROLE_FRONTEND, (1,), queue=1),
    ]
    snap.eventfds.append(EventfdInfo(500, 20, 11))
    ts = build(snap, Selection())
    assert {101, 201, 401, 503} <= set(ts.threads) and 500 not in ts.threads
    assert ts.threads[503].role == ROLE_FRONTEND and (500, 20) in ts.fds
    assert {500, 503} <= set(build(snap, Selection(all=True)).threads)


def test_pid_selection_reads_proc_and_keeps_discovered_roles() -> None:
    me = os.getpid()
    ts = build(_snap(), Selection(pids=(me,), taps=("tapZ",)))
    assert set(ts.threads) == {tid for tid, _ in proc_threads(me)} and me in ts.threads
    assert set(ts.taps) == {("?", "tapZ")}  # not discovered: looked for where vhtune runs
    efd = os.eventfd(0)
    try:
        assert efd in dict(proc_eventfds(me))
        assert (me, efd) in build(None, Selection(pids=(me,))).fds
    finally:
        os.close(efd)
    assert proc_threads(2**22 + 1) == []  # above pid_max: gone, not an error


def test_roles_spread_to_the_same_eventfd_in_other_processes() -> None:
    ts = TargetSet()
    ts.add_fd(FdTarget(200, 30, "kick", 1, 5))
    ts.add_fd(FdTarget(100, 20, "eventfd", None, 5))
    ts.add_fd(FdTarget(100, 21, "eventfd", None, 6))
    propagate_roles(ts)
    assert ts.fds[(100, 20)] == FdTarget(100, 20, "kick", 1, 5)
    assert ts.fds[(100, 21)].role == "eventfd"


def test_extra_targets_win_over_discovered_roles() -> None:
    extra = TargetSet()
    extra.add_fd(FdTarget(200, 30, "call", 0, 5))
    ts = build(_snap(), Selection(extra=lambda: extra))
    assert ts.fds[(200, 30)].role == "call"
    assert ts.fds[(100, 20)].role == "call"  # same eventfd-id 5


def _kata_snap() -> Snapshot:
    """One VM per netns (Kata Containers): a tap named tap0_kata in each, plus one elsewhere by another name."""
    return Snapshot(
        taken_at=0.0,
        hostname="h",
        kernel="6.18",
        taps=[
            TapInfo("tap0_kata", 5, "kata-a", owner_pids=(100,)),
            TapInfo("tap0_kata", 5, "kata-b", owner_pids=(200,)),
            TapInfo("vnet0", 9, "root", owner_pids=(300,)),
        ],
    )


def test_same_named_taps_in_two_netns_are_two_targets() -> None:
    ts = build(_kata_snap(), Selection())
    assert set(ts.taps) == {("kata-a", "tap0_kata"), ("kata-b", "tap0_kata"), ("root", "vnet0")}
    assert ts.taps[("kata-b", "tap0_kata")].netns == "kata-b"
    ts = build(_kata_snap(), Selection(pids=(200,)))  # the taps a process holds: only its own netns's
    assert set(ts.taps) == {("kata-b", "tap0_kata")}


def test_tap_by_bare_name_takes_every_netns_and_netns_slash_name_one() -> None:
    snap = _kata_snap()
    assert set(build(snap, Selection(pids=(300,), taps=("tap0_kata",))).taps) == {
        ("root", "vnet0"),
        ("kata-a", "tap0_kata"),
        ("kata-b", "tap0_kata"),
    }
    assert set(build(snap, Selection(pids=(300,), taps=("kata-a/tap0_kata",))).taps) == {
        ("root", "vnet0"),
        ("kata-a", "tap0_kata"),
    }
    # not discovered (nobody holds it): looked for in the netns given, else where vhtune runs
    assert set(build(snap, Selection(pids=(300,), taps=("x/tap9", "tap8"))).taps) >= {("x", "tap9"), ("?", "tap8")}


def test_a_tap_named_that_does_not_exist_is_said() -> None:
    """A typo in --tap (or a VM not started yet) would record rows of zeros in silence. Discovered taps, and an
    interface that exists though nobody holds it (lo stands for `ip tuntap add` before the VM), are not said."""
    sel = Selection(taps=("tap0_kata", "kata-a/tap0_kata", "lo", "vhtnosuch0", "vhtnosuchns/tap9"))
    assert absent_taps(_kata_snap(), sel) == [
        "--tap vhtnosuch0: there is no interface vhtnosuch0 in netns root now; its rows stay 0 until one appears "
        "(`vhtune discover` lists the taps)",
        "--tap vhtnosuchns/tap9: there is no interface tap9 in netns vhtnosuchns now; its rows stay 0 until one "
        "appears (`vhtune discover` lists the taps)",
    ]
    assert absent_taps(None, Selection(taps=("lo",))) == []


def test_a_malformed_tap_spec_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="NETNS/NAME"):
        build(_kata_snap(), Selection(taps=("ns1/",)))
    from pathlib import Path

    from vhtune.record import RecordOptions

    with pytest.raises(UsageError, match="NETNS/NAME"):  # before anything is compiled or written
        RecordOptions(Path("/nonexistent/rec"), Selection(taps=("/tap0",))).check()
