"""Builds fake /proc and /sys trees for discovery unit tests (the root-path seam of vhtune.discover).

Files are written the way the kernel prints them (stat with the processor in field 39, status with
Cpus_allowed_list, fd symlinks, fdinfo, per-netns net/unix); per-netns link listings and unix-socket
peers go where ``RecordedNetns`` reads them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "discover"
ROOT_NS = 4026531840


def argv_fixture(name: str) -> list[str]:
    """A command line stored one argument per line in tests/fixtures/discover/cmdlines/."""
    return [a for a in (FIXTURES / "cmdlines" / name).read_text().splitlines() if a]


@dataclass
class FakeThread:
    tid: int
    comm: str
    cpus: str = "0-3"
    last_cpu: int = 0
    nice: int = 0
    rt_priority: int = 0
    policy: int = 0  # SCHED_OTHER


@dataclass
class FakeProc:
    pid: int
    comm: str
    argv: list[str]
    threads: list[FakeThread] = field(default_factory=list)
    fds: dict[int, str] = field(default_factory=dict)
    fdinfo: dict[int, str] = field(default_factory=dict)
    netns: int = ROOT_NS
    numa_maps: str = ""


@dataclass
class UnixSock:
    inode: int
    path: str | None = None
    listening: bool = False
    peer: int | None = None


class FakeHost:
    def __init__(self, root: Path, nodes: dict[int, str] | None = None, online: str = "0-3") -> None:
        self.root = root
        self.procs: dict[int, FakeProc] = {}
        self.unix: dict[int, list[UnixSock]] = {}  # netns inode → sockets
        self.links: dict[int, list[dict[str, Any]]] = {}  # netns inode → ip -j link JSON
        self.names: dict[int, str] = {}
        self.nodes = nodes if nodes is not None else {0: online}
        self.online = online

    # --- building --------------------------------------------------------------------------------
    def netns(self, name: str) -> int:
        """A named netns (/run/netns/NAME); returns its inode, as `ip netns add` would create it."""
        d = self.root / "run" / "netns"
        d.mkdir(parents=True, exist_ok=True)
        (d / name).touch()
        ino = os.stat(d / name).st_ino
        self.names[ino] = name
        return ino

    def label(self, ns: int) -> str:
        return "root" if ns == ROOT_NS else self.names.get(ns, f"net:[{ns}]")

    def proc(self, pid: int, comm: str, argv: list[str], **kw: Any) -> FakeProc:
        p = FakeProc(pid, comm, argv, **kw)
        if not p.threads:
            p.threads = [FakeThread(pid, comm)]
        self.procs[pid] = p
        return p

    def tun(self, p: FakeProc, fd: int, iff: str) -> None:
        p.fds[fd] = "/dev/net/tun"
        p.fdinfo[fd] = f"pos:\t0\nflags:\t0104002\nmnt_id:\t25\nino:\t105\niff:\t{iff}\n"

    def eventfd(self, p: FakeProc, fd: int, ident: int, count: int = 0) -> None:
        p.fds[fd] = "anon_inode:[eventfd]"
        p.fdinfo[fd] = (
            f"pos:\t0\nflags:\t02004002\nmnt_id:\t17\nino:\t1030\n"
            f"eventfd-count: {count:16x}\neventfd-id: {ident}\neventfd-semaphore: 0\n"
        )

    def sock(self, p: FakeProc, fd: int, s: UnixSock, ns: int | None = None) -> None:
        """``p`` holds ``s`` at ``fd``; the socket lives in ``ns`` (default: p's netns)."""
        p.fds[fd] = f"socket:[{s.inode}]"
        table = self.unix.setdefault(p.netns if ns is None else ns, [])
        if all(x.inode != s.inode for x in table):
            table.append(s)

    def connect(self, a: UnixSock, b: UnixSock) -> None:
        a.peer, b.peer = b.inode, a.inode

    def serve(self, p: FakeProc, path: str, fds: tuple[int, int], inode: int) -> UnixSock:
        """``p`` listens on ``path`` (socket ``inode`` at ``fds[0]``) and holds one accepted connection (``inode + 1``
        at ``fds[1]``); returns the client's end of it (``inode + 2``), for the caller to give to the client."""
        accepted, client = UnixSock(inode + 1, path), UnixSock(inode + 2)
        self.connect(accepted, client)
        self.sock(p, fds[0], UnixSock(inode, path, listening=True))
        self.sock(p, fds[1], accepted)
        return client

    def tap_link(self, ns: int, name: str, ifindex: int, *, mq: bool = False, txqlen: int = 1000) -> None:
        self.links.setdefault(ns, []).append(
            {
                "ifindex": ifindex,
                "ifname": name,
                "txqlen": txqlen,
                "linkinfo": {
                    "info_kind": "tun",
                    "info_data": {"type": "tap", "pi": False, "vnet_hdr": True, "multi_queue": mq},
                },
                "stats64": {
                    "rx": {"bytes": 1000, "packets": 10, "errors": 0, "dropped": 1},
                    "tx": {"bytes": 2000, "packets": 20, "errors": 0, "dropped": 2},
                },
            }
        )

    # --- writing ---------------------------------------------------------------------------------
    def write(self) -> Path:
        proc = self.root / "proc"
        proc.mkdir(parents=True, exist_ok=True)
        (proc / "sys/kernel").mkdir(parents=True, exist_ok=True)
        (proc / "sys/kernel/hostname").write_text("fakehost\n")
        (proc / "sys/kernel/osrelease").write_text("6.18.0-fake\n")
        cpu = self.root / "sys/devices/system/cpu"
        cpu.mkdir(parents=True, exist_ok=True)
        (cpu / "online").write_text(self.online + "\n")
        for n, cpus in self.nodes.items():
            d = self.root / f"sys/devices/system/node/node{n}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "cpulist").write_text(cpus + "\n")
        self_dir = proc / "self" / "ns"
        self_dir.mkdir(parents=True, exist_ok=True)
        _symlink(self_dir / "net", f"net:[{ROOT_NS}]")
        (proc / "self" / "net").mkdir(exist_ok=True)
        (proc / "self" / "net" / "unix").write_text(self._unix_table(ROOT_NS))
        for p in self.procs.values():
            self._write_proc(proc, p)
        rec = self.root / "vhtune-netns"
        (rec / "links").mkdir(parents=True, exist_ok=True)
        for ns, links in self.links.items():
            label = self.label(ns).replace(":", "_").replace("[", "").replace("]", "")
            (rec / "links" / f"{label}.json").write_text(json.dumps(links))
        peers = {
            self.label(ns): {str(s.inode): s.peer for s in socks if s.peer is not None}
            for ns, socks in self.unix.items()
        }
        (rec / "unix_peers.json").write_text(json.dumps(peers))
        return self.root

    def _unix_table(self, ns: int) -> str:
        lines = ["Num       RefCount Protocol Flags    Type St Inode Path"]
        for s in self.unix.get(ns, []):
            flags = 0x10000 if s.listening else 0
            state = 1 if s.listening or s.peer is None else 3
            line = f"0000000000000000: 00000002 00000000 {flags:08x} 0001 {state:02x} {s.inode}"
            lines.append(line + (f" {s.path}" if s.path else ""))
        return "\n".join(lines) + "\n"

    def _write_proc(self, proc: Path, p: FakeProc) -> None:
        d = proc / str(p.pid)
        (d / "ns").mkdir(parents=True, exist_ok=True)
        (d / "comm").write_text(p.comm + "\n")
        (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in p.argv))
        _symlink(d / "ns" / "net", f"net:[{p.netns}]")
        (d / "net").mkdir(exist_ok=True)
        (d / "net" / "unix").write_text(self._unix_table(p.netns))
        (d / "numa_maps").write_text(p.numa_maps)
        main = next((t for t in p.threads if t.tid == p.pid), p.threads[0])
        _write_task(d, p.pid, main)
        for t in p.threads:
            _write_task(d / "task" / str(t.tid), t.tid, t)
        (d / "fd").mkdir(exist_ok=True)
        (d / "fdinfo").mkdir(exist_ok=True)
        for fd, link in p.fds.items():
            _symlink(d / "fd" / str(fd), link)
            (d / "fdinfo" / str(fd)).write_text(p.fdinfo.get(fd, "pos:\t0\nflags:\t02\nmnt_id:\t1\n"))


def _symlink(path: Path, target: str) -> None:
    if path.is_symlink():
        path.unlink()
    os.symlink(target, path)


def _write_task(d: Path, tid: int, t: FakeThread) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "comm").write_text(t.comm + "\n")
    fields = ["S"] + ["0"] * 49  # fields 3..52
    fields[19 - 3] = str(t.nice)
    fields[39 - 3] = str(t.last_cpu)
    fields[40 - 3] = str(t.rt_priority)
    fields[41 - 3] = str(t.policy)
    (d / "stat").write_text(f"{tid} ({t.comm}) {' '.join(fields)}\n")
    (d / "status").write_text(f"Name:\t{t.comm}\nPid:\t{tid}\nCpus_allowed_list:\t{t.cpus}\n")
