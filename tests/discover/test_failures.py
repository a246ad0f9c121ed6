"""What cannot be seen is reported, never a crash: vanished processes, permission denied, broken peers."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.discover.fakeproc import FakeHost, FakeThread, UnixSock, argv_fixture
from vhtune.discover import NetnsRef, discover
from vhtune.discover.procfs import ProcFS
from vhtune.errors import DiscoveryError

NOBODY = 65534


def _host(root: Path) -> FakeHost:
    h = FakeHost(root)
    q = h.proc(
        1000,
        "qemu-system-x86",
        argv_fixture("hand-written.args"),
        threads=[FakeThread(1000, "qemu-system-x86"), FakeThread(1001, "CPU 0/KVM", "0", 0)],
    )
    h.tun(q, 20, "tap-hw0")
    tp = h.proc(4000, "dpdk-testpmd", ["dpdk-testpmd", "--vdev", "net_vhost0,iface=/run/vu0.sock"])
    h.sock(q, 21, h.serve(tp, "/run/vu0.sock", fds=(10, 11), inode=7000))
    return h


def test_process_listed_then_gone_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _host(tmp_path).write()
    listed = ProcFS.pids
    monkeypatch.setattr(ProcFS, "pids", lambda self: [*listed(self), 4242])  # no /proc/4242
    snap = discover(root)
    assert [vm.pid for vm in snap.vms] == [1000]


def test_vm_vanishing_mid_walk_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _host(tmp_path).write()
    real_tids = ProcFS.tids

    def tids_after_exit(self: ProcFS, pid: int) -> list[int]:
        if pid == 1000:  # QEMU exits after its fds were read, before its threads are
            shutil.rmtree(self.proc / "1000")
        return real_tids(self, pid)

    monkeypatch.setattr(ProcFS, "tids", tids_after_exit)
    snap = discover(root)
    assert snap.vms == []
    assert any("1000" in p and "exited" in p for p in snap.problems)


def test_fd_closed_while_listing(tmp_path: Path) -> None:
    h = _host(tmp_path)
    root = h.write()
    (root / "proc/1000/fdinfo/20").unlink()  # the tun fd was closed between readlink and fdinfo
    snap = discover(root)
    assert snap.taps == []
    assert [vm.pid for vm in snap.vms] == [1000]


def test_malformed_files_do_not_crash(tmp_path: Path) -> None:
    root = _host(tmp_path).write()
    (root / "proc/1000/task/1001/stat").write_text("garbage without parentheses\n")
    for pid in ("1000", "4000", "self"):
        (root / "proc" / pid / "net/unix").write_text("Num RefCount\nnot a number at all x y z\n")
    snap = discover(root)
    assert [vm.pid for vm in snap.vms] == [1000]
    assert any("unix sockets" in p for p in snap.problems)


class _BrokenNetns:
    def links(self, ns: NetnsRef) -> list[dict[str, Any]]:
        raise DiscoveryError("`ip -n x link` failed: permission denied")

    def unix_peers(self, ns: NetnsRef) -> dict[int, int]:
        raise PermissionError(1, "Operation not permitted")


def test_netns_access_failures_become_problems(tmp_path: Path) -> None:
    snap = discover(_host(tmp_path).write(), link_lister=_BrokenNetns())
    text = " ".join(snap.problems)
    assert "peers of netns root could not be read (operation not permitted)" in text
    assert "links of netns root could not be listed" in text
    assert "tap-hw0" in text
    (sock,) = snap.sockets
    # Without peers the socket cannot be paired, but the listening back-end is still found.
    assert (sock.connected, sock.listener_pid, sock.backend_pid) == (False, 4000, 4000)


@pytest.fixture
def world_readable_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vhtune-discover-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def discover_as_nobody(root: str) -> dict[str, Any]:
    """discover() in a forked child that dropped root (no exec: the venv is not readable by nobody)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 1
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            data = json.dumps(dataclasses.asdict(discover(Path(root)))).encode()
            with os.fdopen(wfd, "wb") as f:
                f.write(data)
            status = 0
        except BaseException as exc:
            os.write(2, f"discover as nobody failed: {exc!r}\n".encode())
        finally:
            os._exit(status)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "discover() raised in the unprivileged child"
    out: dict[str, Any] = json.loads(data)
    return out


def test_permission_denied_on_fd_dir(world_readable_tmp: Path, require_root: None) -> None:
    root = _host(world_readable_tmp).write()
    for d in root.rglob("*"):
        if not d.is_symlink():
            d.chmod(0o755 if d.is_dir() else 0o644)
    (root / "proc/1000/fd").chmod(0o000)  # as a root-owned process's fd dir looks to another user
    snap = discover_as_nobody(str(root))
    assert [vm["pid"] for vm in snap["vms"]] == [1000]
    assert any("permission denied: pid 1000" in p and "run as root" in p for p in snap["problems"])
    assert snap["taps"] == []


def test_exiting_qemu_is_not_listed_as_a_vm(tmp_path: Path) -> None:
    """A QEMU that is exiting or a zombie its parent has not reaped yet keeps its comm but has released its
    memory: /proc/PID/cmdline is empty and only the main thread is left. It is no VM to record or tune."""
    h = _host(tmp_path)
    h.proc(1500, "qemu-system-x86", [])  # zombie: comm kept, no command line
    snap = discover(h.write())
    assert [vm.pid for vm in snap.vms] == [1000]
    assert not any("1500" in p and "debug-threads" in p for p in snap.problems)
    assert all(t.pid != 1500 for t in snap.threads)


def test_unix_socket_name_with_a_newline_does_not_hide_the_others(tmp_path: Path) -> None:
    """/proc/net/unix prints bound names raw: any local user can bind a name holding a newline and text that
    looks like a broken line. That one socket must not hide every socket of the netns (and all vhost-user pairing)."""
    h = _host(tmp_path)
    odd = h.proc(5000, "python3", ["python3", "odd.py"])
    forged = "/tmp/x\n0000000000000000: 00000002 00000000 00010000 0001 01 notanumber /run/vu0.sock"
    h.sock(odd, 3, UnixSock(8000, forged, listening=True))
    snap = discover(h.write())
    (sock,) = snap.sockets
    assert (sock.connected, sock.listener_pid, sock.backend_pid) == (True, 4000, 4000)
    assert not any("unix sockets" in p for p in snap.problems)
