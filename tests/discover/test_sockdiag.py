"""sock_diag UNIX peers against this kernel: socketpairs, listener/accept pairs, another netns."""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vhtune.discover import sockdiag
from vhtune.discover.procfs import SS_CONNECTED, ProcFS


def _ino(s: socket.socket) -> int:
    return os.fstat(s.fileno()).st_ino


def test_socketpair_peers() -> None:
    a, b = socket.socketpair()
    with a, b:
        peers = sockdiag.unix_peers()
        assert peers[_ino(a)] == _ino(b) and peers[_ino(b)] == _ino(a)


def test_listener_accept_pair_and_proc_net_unix() -> None:
    with tempfile.TemporaryDirectory(prefix="disc-sd-") as d:
        path = f"{d}/s.sock"
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with srv, cli:
            srv.bind(path)
            srv.listen(1)
            cli.connect(path)
            acc, _ = srv.accept()
            with acc:
                peers = sockdiag.unix_peers()
                assert peers[_ino(cli)] == _ino(acc)
                assert _ino(srv) not in peers  # a listener has no peer
                table = {e.inode: e for e in ProcFS().unix_table("self")}
                listener, accepted, client = table[_ino(srv)], table[_ino(acc)], table[_ino(cli)]
                assert listener.listening and listener.path == path
                # The accepted socket carries the listener's name; the connecting one is unnamed.
                assert (accepted.listening, accepted.path, accepted.state) == (False, path, SS_CONNECTED)
                assert client.path is None and client.state == SS_CONNECTED


def test_parse_dump_errors_and_truncation() -> None:
    err = struct.pack("=IHHII", 20, sockdiag.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -13)
    with pytest.raises(PermissionError):
        sockdiag.parse_dump(err, {})
    out: dict[int, int] = {}
    assert sockdiag.parse_dump(b"\x01\x02\x03", out) is False and out == {}
    # A message whose length field claims more than was received stops the walk without raising.
    assert sockdiag.parse_dump(struct.pack("=IHHII", 4096, 20, 0, 1, 0) + b"\0" * 8, out) is False


def test_missing_netns_file_raises_oserror() -> None:
    with pytest.raises(FileNotFoundError):
        sockdiag.unix_peers("/proc/0/ns/net")


@pytest.fixture
def other_netns(require_root: None) -> Iterator[str]:
    name = f"discsd{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=10)


def test_peers_of_another_netns(other_netns: str) -> None:
    """Sockets created inside another netns are listed only by a dump made from inside it."""
    made: list[socket.socket] = []

    def create_inside() -> None:
        fd = os.open(f"/run/netns/{other_netns}", os.O_RDONLY)
        try:
            assert ctypes.CDLL(None, use_errno=True).setns(fd, sockdiag.CLONE_NEWNET) == 0
        finally:
            os.close(fd)
        made.extend(socket.socketpair())

    t = threading.Thread(target=create_inside)
    t.start()
    t.join()
    a, b = made
    with a, b:
        inside = sockdiag.unix_peers(str(Path("/run/netns") / other_netns))
        assert inside == {_ino(a): _ino(b), _ino(b): _ino(a)}
        assert _ino(a) not in sockdiag.unix_peers()
