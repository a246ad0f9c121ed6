"""Discovery stays proportional to the host: no step compares every VM's socket with every socket of the host."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.discover.fakeproc import ROOT_NS, FakeHost, FakeThread, UnixSock
from vhtune.discover import discover, vhostuser


def _host(root: Path, vms: int) -> Path:
    """``vms`` QEMUs, each listening on its own vhost-user socket (chardev server=on) served by one OVS, and each
    holding the listening monitor socket libvirt passed it: as many listeners on the host as VMs, times two."""
    h = FakeHost(root)
    ovs = h.proc(2, "ovs-vswitchd", ["ovs-vswitchd"], threads=[FakeThread(2, "ovs-vswitchd"), FakeThread(3, "pmd7")])
    for k in range(vms):
        pid = 10_000 + 10 * k
        path = f"/var/run/openvswitch/vhu{k}"
        argv = ["qemu-system-x86_64", "-name", f"guest=vm{k},debug-threads=on", "-chardev"]
        argv += [f"socket,id=c0,path={path},server=on", "-netdev", "vhost-user,id=n0,chardev=c0"]
        q = h.proc(
            pid, "qemu-system-x86", argv, threads=[FakeThread(pid, "qemu-system-x86"), FakeThread(pid + 1, "CPU 0/KVM")]
        )
        h.sock(q, 3, UnixSock(500_000 + k, f"/var/lib/libvirt/qemu/domain-{k}/monitor.sock", listening=True))
        h.sock(ovs, 100 + k, h.serve(q, path, fds=(30, 31), inode=100_000 + 10 * k))
    h.tap_link(ROOT_NS, "lo", 1)
    return h.write()


def _comparisons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vms: int) -> int:
    calls = 0
    real = vhostuser.same_path

    def counting(a: str | None, b: str | None) -> bool:
        nonlocal calls
        calls += 1
        return real(a, b)

    monkeypatch.setattr(vhostuser, "same_path", counting)
    snap = discover(_host(tmp_path / str(vms), vms), guest_memory_numa=False)
    assert len(snap.sockets) == vms and all(s.backend_pid == 2 for s in snap.sockets), snap.problems
    return calls + 1


def test_socket_pairing_is_linear_in_the_number_of_vms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small, large = _comparisons(tmp_path, monkeypatch, 8), _comparisons(tmp_path, monkeypatch, 32)
    # Four times the VMs: four times the path comparisons (sixteen if every socket were compared with every one).
    assert large <= 5 * small, (small, large)
