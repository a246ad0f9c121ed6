"""vhost-user sockets: which process is on each end of a VM's (or a back-end's) socket path.

Unix-socket facts used (net/unix/af_unix.c): a listener is bound to the path (``__SO_ACCEPTCON`` in
/proc/net/unix); the socket accept() returns carries the listener's name too, but it lives in the
*connecting* side's netns; the connecting socket itself is unnamed. So for each socket inode a VM holds we
take its peer (sock_diag UNIX_DIAG_PEER) and call the pair "on path P" when either end is named P. The
holders of the peer inode (from /proc/*/fd) are the other side.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from vhtune.discover.model import NetdevInfo, VhostUserSocketInfo, VMInfo
from vhtune.discover.procfs import UnixEntry

# Where back-ends name their socket on the command line: DPDK vdev "net_vhost0,iface=PATH", virtio-user
# "path=PATH", vhtune / vhost-user daemons "--socket PATH", "--socket-path=PATH".
_ARG_PATH = re.compile(r"(?:^|[\s,])(?:iface|path|socket|socket-path)=([^,\s]+)")
_SOCKET_FLAGS = ("--socket", "--socket-path")


def paths_in_argv(argv: list[str]) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.extend(_ARG_PATH.findall(arg.lstrip("-")))
        if arg in _SOCKET_FLAGS and i + 1 < len(argv):
            out.append(argv[i + 1])
    return [p for p in dict.fromkeys(out) if "/" in p or p.endswith(".sock")]


def same_path(a: str | None, b: str | None) -> bool:
    """Bound names are stored as given to bind(); a relative name matches the absolute path's tail."""
    if not a or not b:
        return False
    if a == b or os.path.normpath(a) == os.path.normpath(b):
        return True
    if not a.startswith("/") and b.endswith("/" + os.path.normpath(a)):
        return True
    return not b.startswith("/") and a.endswith("/" + os.path.normpath(b))


@dataclass
class UnixView:
    """Every unix socket seen, merged over all network namespaces (socket inodes are host-unique)."""

    entries: dict[int, UnixEntry] = field(default_factory=dict)
    peers: dict[int, int] = field(default_factory=dict)
    holders: dict[int, set[int]] = field(default_factory=dict)  # inode → pids holding an fd to it
    by_pid: dict[int, dict[int, int]] = field(default_factory=dict)  # pid → fd → inode
    # Listening sockets by normalised bound name, built on first use (after every netns was read): one lookup
    # per socket path instead of a walk over every socket of the host.
    _listening: dict[str, list[int]] | None = field(default=None, init=False, repr=False)
    _relative: list[str] = field(default_factory=list, init=False, repr=False)

    def path(self, inode: int | None) -> str | None:
        e = self.entries.get(inode) if inode is not None else None
        return e.path if e else None

    def listeners_on(self, path: str) -> set[int]:
        """Inodes of the listening sockets bound to ``path`` (in the sense of ``same_path``)."""
        if self._listening is None:
            self._listening = {}
            for inode, e in self.entries.items():
                if e.listening and e.path:
                    self._listening.setdefault(os.path.normpath(e.path), []).append(inode)
            self._relative = [name for name in self._listening if not name.startswith("/")]
        found = set(self._listening.get(os.path.normpath(path), ()))
        # Relative names (rare) match an absolute path by its tail, in either direction.
        for name in self._relative if path.startswith("/") else self._listening:
            if same_path(name, path):
                found.update(self._listening[name])
        return found


def _link(view: UnixView, own_pid: int, path: str) -> tuple[str | None, set[int], set[int]]:
    """For the sockets ``own_pid`` holds on ``path``: ('listener' | None, peer holders, listener holders)."""
    role: str | None = None
    peers: set[int] = set()
    for inode in view.by_pid.get(own_pid, {}).values():
        e = view.entries.get(inode)
        if e is not None and e.listening and same_path(e.path, path):
            role = "listener"
            continue
        peer = view.peers.get(inode)
        if peer is None:
            continue
        if same_path(view.path(inode), path) or same_path(view.path(peer), path):
            peers |= view.holders.get(peer, set()) - {own_pid}
    listeners: set[int] = set()
    for inode in view.listeners_on(path):
        listeners |= view.holders.get(inode, set())
    return role, peers, listeners


def vm_socket(view: UnixView, vm: VMInfo, nd: NetdevInfo, path: str) -> VhostUserSocketInfo:
    sock = VhostUserSocketInfo(
        path=path, vm_pid=vm.pid, frontend_pid=vm.pid, netdev_id=nd.id, qemu_server=nd.socket_server
    )
    role, peers, listeners = _link(view, vm.pid, path)
    sock.peer_pids = tuple(sorted(peers))
    sock.connected = bool(peers)
    if role == "listener":
        sock.listener_pid = vm.pid
    elif listeners:
        sock.listener_pid = min(listeners - {vm.pid} or listeners)
    backends = peers or (listeners - {vm.pid})
    sock.backend_pid = min(backends) if backends else None
    return sock


def backend_socket(view: UnixView, backend_pid: int, path: str) -> VhostUserSocketInfo | None:
    """A socket path a back-end names on its command line (its front-end may be anything, e.g. DPDK
    virtio-user); None when the back-end holds no socket on that path."""
    role, peers, listeners = _link(view, backend_pid, path)
    if role is None and not peers:
        return None
    return VhostUserSocketInfo(
        path=path,
        listener_pid=backend_pid if role == "listener" else (min(listeners) if listeners else None),
        peer_pids=tuple(sorted(peers)),
        backend_pid=backend_pid,
        frontend_pid=min(peers) if peers else None,
        connected=bool(peers),
    )


def frontend_socket(view: UnixView, frontend_pid: int, path: str) -> VhostUserSocketInfo | None:
    """A socket path a non-QEMU front-end (DPDK virtio-user) names; the back-end is whoever holds the other
    end (or listens on the path). None when the front-end holds nothing on that path."""
    role, peers, listeners = _link(view, frontend_pid, path)
    if role is None and not peers:
        return None
    backends = peers or (listeners - {frontend_pid})
    return VhostUserSocketInfo(
        path=path,
        listener_pid=frontend_pid if role == "listener" else (min(listeners) if listeners else None),
        peer_pids=tuple(sorted(peers)),
        backend_pid=min(backends) if backends else None,
        frontend_pid=frontend_pid,
        connected=bool(peers),
    )
