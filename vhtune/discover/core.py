"""One discovery pass over /proc and /sys: VMs, their threads, taps, vhost-user sockets and back-ends.

Cost: one walk of /proc/*/{comm,cmdline,fd,ns/net}, one /proc/net/unix read and one sock_diag dump per
network namespace, one ``ip`` per namespace that holds a tap, one TUNGETDEVNETNS per tun fd (~6 µs, see
taps.py), and per-thread reads only for the processes that matter (VMs, back-ends, their non-VM front-ends,
vhost workers).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vhtune.discover.memory import parse_numa_maps
from vhtune.discover.model import (
    ROLE_BACKEND,
    ROLE_FRONTEND,
    ROLE_VCPU,
    ROLE_VHOST_WORKER,
    BackendInfo,
    CpuInfo,
    EventfdInfo,
    Snapshot,
    ThreadInfo,
    VhostUserSocketInfo,
    VMInfo,
)
from vhtune.discover.netns import HostNetns, NetnsAccess, NetnsRef, RecordedNetns
from vhtune.discover.procfs import ProcFS
from vhtune.discover.qemu_cmdline import is_qemu_argv0, parse_qemu_cmdline
from vhtune.discover.taps import TUN_DEVICE, TunFd, assemble_taps, device_netns
from vhtune.discover.threads import VHOST_WORKER, backend_kind, read_thread
from vhtune.discover.vhostuser import UnixView, backend_socket, frontend_socket, paths_in_argv, vm_socket
from vhtune.errors import DiscoveryError, VhtuneError

EVENTFD_LINK = "anon_inode:[eventfd]"
VHOST_NET_DEVICE = "/dev/vhost-net"
# A fixture tree or captured host carries its per-netns facts here (see RecordedNetns).
RECORDED_NETNS_DIR = "vhtune-netns"

_Gone = (FileNotFoundError, ProcessLookupError)
# (pid, its tun fds) → fd → inode of the netns each fd's tap device lives in (see taps.device_netns).
TunNetns = Callable[[int, Sequence[int]], dict[int, int]]


@dataclass
class _Proc:
    pid: int
    comm: str
    argv: list[str]
    fds: dict[int, str] = field(default_factory=dict)
    netns: int | None = None


def _is_backend_argv(comm: str, argv: list[str]) -> bool:
    joined = " ".join(argv)
    return (
        "net_vhost" in joined
        or "eth_vhost" in joined
        or comm.startswith("ovs-vswitchd")
        or (any("vhtune" in a for a in argv[:3]) and "backend" in argv[1:])
    )


def _is_frontend_argv(argv: list[str]) -> bool:
    # DPDK's virtio-user PMD ("net_virtio_user0,path=SOCK") is a vhost-user front-end.
    return any("virtio_user" in a for a in argv)


class _Walk:
    def __init__(
        self, fs: ProcFS, access: NetnsAccess, snap: Snapshot, guest_memory_numa: bool, tun_netns: TunNetns
    ) -> None:
        self.fs = fs
        self.access = access
        self.tun_netns = tun_netns
        self.snap = snap
        self.guest_memory_numa = guest_memory_numa
        self.procs: dict[int, _Proc] = {}
        self.node_of: dict[int, int] = {}
        self.namespaces: dict[int, NetnsRef] = {}
        self.self_ns: int | None = None
        self.unix = UnixView()
        self.threads: dict[int, ThreadInfo] = {}
        self._links: dict[int, dict[str, dict[str, Any]] | None] = {}
        self.unreadable_fds: list[int] = []

    def problem(self, text: str) -> None:
        self.snap.problems.append(text)

    # --- host --------------------------------------------------------------------------------------
    def cpus(self) -> None:
        self.node_of = self.fs.cpu_nodes()
        online = self.fs.online_cpus() or tuple(sorted(self.node_of))
        self.snap.cpus = [CpuInfo(cpu=c, node=self.node_of.get(c, 0)) for c in online]

    def processes(self) -> None:
        try:
            pids = self.fs.pids()
        except OSError as exc:
            raise DiscoveryError(
                f"cannot list processes under {self.fs.proc}: {(exc.strerror or str(exc)).lower()}",
                hint="is /proc mounted?" if self.fs.root == Path("/") else "the root must contain proc/",
            ) from exc
        for pid in pids:
            try:
                p = _Proc(pid=pid, comm=self.fs.comm(pid), argv=self.fs.cmdline(pid))
            except (OSError, ValueError):
                continue  # exited between listing and reading: not a problem worth reporting
            try:
                p.fds = self.fs.fd_links(pid)
            except PermissionError:
                self.unreadable_fds.append(pid)
            except (OSError, ValueError):
                pass
            with contextlib.suppress(OSError):
                p.netns = self.fs.netns(pid)
            self.procs[pid] = p
        if self.unreadable_fds:
            shown = ", ".join(map(str, self.unreadable_fds[:8])) + (" …" if len(self.unreadable_fds) > 8 else "")
            self.problem(
                f"the open files of {len(self.unreadable_fds)} process(es) could not be read (permission "
                f"denied: pid {shown}); taps and socket ends they hold are not shown"
                + ("." if os.geteuid() == 0 else " — run as root.")
            )
        for p in self.procs.values():
            for fd, link in p.fds.items():
                inode = ProcFS.socket_inode(link)
                if inode is not None:
                    self.unix.holders.setdefault(inode, set()).add(p.pid)
                    self.unix.by_pid.setdefault(p.pid, {})[fd] = inode

    def netns(self) -> None:
        try:
            self.self_ns = self.fs.netns("self")
        except OSError:
            self.self_ns = None
        names = self.fs.netns_names()
        ns_pids: dict[int, list[int]] = {}
        for p in self.procs.values():
            if p.netns is None:
                continue
            ns_pids.setdefault(p.netns, []).append(p.pid)
            if p.netns in self.namespaces:
                continue
            name = names.get(p.netns)
            is_self = p.netns == self.self_ns
            label = "root" if is_self else (name or f"net:[{p.netns}]")
            self.namespaces[p.netns] = NetnsRef(p.netns, label, name, p.pid, is_self)
        # Named namespaces without a process (a tap moved into one) are reachable through /run/netns.
        for inode, name in names.items():
            if inode not in self.namespaces:
                self.namespaces[inode] = NetnsRef(inode, name, name, None, inode == self.self_ns)
        for _inode, ref in sorted(self.namespaces.items()):
            if ref.pid is not None or ref.is_self:
                # /proc/PID/net/unix lists PID's netns; the first few members stand in for each other
                # when one exits meanwhile.
                members: list[int | str] = ["self"] if ref.is_self else []
                members += ns_pids.get(ref.inode, [])[:3]
                for i, member in enumerate(members):
                    try:
                        for e in self.fs.unix_table(member):
                            self.unix.entries.setdefault(e.inode, e)
                        break
                    except (OSError, ValueError) as exc:
                        if i == len(members) - 1 or not isinstance(exc, FileNotFoundError | ProcessLookupError):
                            self.problem(f"unix sockets of netns {ref.label} could not be read ({_why(exc)}).")
                            break
            try:
                self.unix.peers.update(self.access.unix_peers(ref))
            except (OSError, VhtuneError, ValueError) as exc:
                self.problem(
                    f"unix socket peers of netns {ref.label} could not be read ({_why(exc)}); "
                    "vhost-user connections there are not paired."
                )

    def links_of(self, ref: NetnsRef) -> dict[str, dict[str, Any]] | None:
        if ref.inode not in self._links:
            try:
                self._links[ref.inode] = {str(li.get("ifname")): li for li in self.access.links(ref)}
            except (OSError, VhtuneError, ValueError) as exc:
                self.problem(f"links of netns {ref.label} could not be listed ({_why(exc)}).")
                self._links[ref.inode] = None
        return self._links[ref.inode]

    # --- pieces ------------------------------------------------------------------------------------
    def taps(self) -> None:
        tun: list[TunFd] = []
        for p in self.procs.values():
            held: dict[int, str] = {}
            for fd, link in p.fds.items():
                if link != TUN_DEVICE:
                    continue
                try:
                    iff = self.fs.fdinfo(p.pid, fd).get("iff")
                except (OSError, ValueError):
                    continue
                if iff:
                    held[fd] = iff
            dev_ns = self.tap_netns(p.pid, list(held)) if held else {}
            tun += [TunFd(p.pid, fd, iff, p.netns, dev_ns.get(fd)) for fd, iff in held.items()]
        self.snap.taps = assemble_taps(tun, self.namespaces, self.self_ns, self.links_of, self.snap.problems)

    def tap_netns(self, pid: int, fds: list[int]) -> dict[int, int]:
        """fd → netns inode of the device of each tun fd the kernel answers for; the others are looked up by name."""
        try:
            return self.tun_netns(pid, fds)
        except PermissionError as exc:
            self.problem(
                f"the network namespace of the taps held by pid {pid} could not be asked ({_why(exc)}); they are "
                "looked up by name, and a tap of the same name in another namespace may be taken for them."
            )
        except OSError:
            pass  # exited meanwhile (ESRCH), or a kernel without pidfd_getfd (ENOSYS): looked up by name
        return {}

    def thread(self, pid: int, tid: int, in_vmm: bool) -> ThreadInfo | None:
        try:
            t = read_thread(self.fs, pid, tid, self.node_of, in_vmm)
        except (OSError, ValueError):
            return None
        self.threads[tid] = t
        return t

    def threads_of(self, pid: int, in_vmm: bool) -> list[ThreadInfo]:
        try:
            tids = self.fs.tids(pid)
        except PermissionError:
            self.problem(f"threads of pid {pid} could not be read (permission denied).")
            return []
        except (OSError, ValueError):
            return []
        return [t for tid in tids if (t := self.thread(pid, tid, in_vmm)) is not None]

    def eventfds(self, pid: int) -> None:
        p = self.procs.get(pid)
        if p is None:
            return
        for fd, link in sorted(p.fds.items()):
            if link != EVENTFD_LINK:
                continue
            try:
                info = self.fs.fdinfo(pid, fd)
            except (OSError, ValueError):
                continue
            count = info.get("eventfd-count")
            ident = info.get("eventfd-id")  # absent on older kernels (6.18 here prints it)
            self.snap.eventfds.append(
                EventfdInfo(
                    pid=pid,
                    fd=fd,
                    # eventfd_show_fdinfo prints the counter with %16llx (hex) and the id in decimal.
                    count=int(count, 16) if count else None,
                    eventfd_id=int(ident) if ident and ident.isdigit() else None,
                )
            )

    def vm(self, p: _Proc, vhost_kthreads: dict[int, list[int]]) -> VMInfo | None:
        cfg = parse_qemu_cmdline(p.argv)
        vm = VMInfo(
            pid=p.pid,
            name=cfg.name,
            uuid=cfg.uuid,
            memory_mib=cfg.memory_mib,
            accel=cfg.accel,
            netdevs=cfg.netdevs,
            debug_threads=cfg.debug_threads,
        )
        if p.netns is not None and p.netns in self.namespaces:
            vm.netns = self.namespaces[p.netns].label
        threads = self.threads_of(p.pid, in_vmm=True)
        if not threads and not os.path.exists(self.fs.proc / str(p.pid) / "stat"):
            self.problem(f"VM pid {p.pid} exited during discovery.")
            return None
        vcpus = sorted((t for t in threads if t.role == ROLE_VCPU), key=lambda t: t.vcpu_index or 0)
        vm.vcpu_tids = [t.tid for t in vcpus]
        if vm.accel is None and vcpus:
            vm.accel = vcpus[0].comm.rsplit("/", 1)[-1].lower()
        if not vcpus and threads:
            self.problem(
                f"VM {vm.name or p.pid} (pid {p.pid}) names no vCPU threads (started without "
                "-name ...,debug-threads=on), so its vCPUs cannot be told apart from other QEMU threads."
            )
        vm.vhost_tids = [t.tid for t in threads if t.role == ROLE_VHOST_WORKER]
        for kpid in vhost_kthreads.get(p.pid, []):
            t = self.thread(kpid, kpid, in_vmm=False)
            if t is not None:
                vm.vhost_tids.append(t.tid)
        # libvirt passes taps and sockets as fds: name them from the fds.
        n_taps = sum(nd.kind == "tap" for nd in vm.netdevs)
        for nd in vm.netdevs:
            if nd.kind == "tap" and nd.ifname is None:
                for fd in nd.fds:
                    try:
                        nd.ifname = self.fs.fdinfo(p.pid, fd).get("iff") or None
                    except (OSError, ValueError):
                        continue
                    if nd.ifname:
                        break
            # A lone tap netdev of a QEMU holding /dev/vhost-net fds (passed without vhost= on the
            # command line) is served by vhost-net; with several taps it is ambiguous, so left as parsed.
            if nd.kind == "tap" and not nd.vhost and n_taps == 1 and VHOST_NET_DEVICE in p.fds.values():
                nd.vhost = True
            # A relative chardev path starts in QEMU's working directory; its bound name may be the absolute
            # path (the back-end's), which a bare "vu.sock" would match in any directory.
            if nd.kind == "vhost-user" and nd.socket_path and not nd.socket_path.startswith(("/", "@")):
                with contextlib.suppress(OSError):
                    cwd = self.fs.cwd(p.pid)
                    if cwd.startswith("/") and not cwd.endswith(" (deleted)"):
                        nd.socket_path = os.path.normpath(os.path.join(cwd, nd.socket_path))
            if nd.kind == "vhost-user" and nd.socket_path is None and nd.chardev_fd is not None:
                inode = self.unix.by_pid.get(p.pid, {}).get(nd.chardev_fd)
                peer = self.unix.peers.get(inode) if inode is not None else None
                nd.socket_path = self.unix.path(inode) or self.unix.path(peer)
        if self.guest_memory_numa:
            try:
                mem = parse_numa_maps(self.fs.numa_maps(p.pid))
                vm.memory_kib_by_node = mem.kib_by_node
                vm.memory_nodes = mem.nodes()
            except _Gone:
                pass
            except (OSError, ValueError) as exc:
                self.problem(f"guest memory placement of pid {p.pid} is unknown ({_why(exc)}).")
        if not vm.memory_nodes and cfg.policy_nodes:
            vm.memory_nodes = sorted(set(cfg.policy_nodes))
        self.eventfds(p.pid)
        return vm

    def backend(self, pid: int, sockets: list[VhostUserSocketInfo]) -> BackendInfo | None:
        p = self.procs.get(pid)
        if p is None:
            return None
        threads = self.threads_of(pid, in_vmm=False)
        workers = [t for t in threads if t.role == ROLE_BACKEND]
        if not workers:
            # No thread carries a data-path name: the process does its vhost-user work in whatever
            # threads it has (single-threaded daemons), so all of them count.
            for t in threads:
                t.role = ROLE_BACKEND
            workers = threads
        be = BackendInfo(
            pid=pid,
            kind=backend_kind(p.comm, p.argv, [t.comm for t in threads]),
            comm=p.comm,
            thread_tids=[t.tid for t in workers],
            socket_paths=sorted({s.path for s in sockets}),
            frontend_pids=sorted({s.frontend_pid for s in sockets if s.frontend_pid is not None}),
        )
        self.eventfds(pid)
        return be

    def frontend(self, pid: int) -> None:
        """A front-end that is not a VM (DPDK virtio-user, or any process on a back-end's socket): its threads,
        the data-path ones (DPDK lcores, named like a back-end's) with ROLE_FRONTEND, and its eventfds."""
        threads = self.threads_of(pid, in_vmm=False)
        lcores = [t for t in threads if t.role == ROLE_BACKEND]
        # No data-path name (e.g. a Python front-end): as for back-ends, all of its threads count.
        for t in lcores or threads:
            t.role = ROLE_FRONTEND
        self.eventfds(pid)

    # --- the pass ----------------------------------------------------------------------------------
    def run(self) -> None:
        self.cpus()
        self.processes()
        self.netns()
        self.taps()
        vhost_kthreads: dict[int, list[int]] = {}
        for p in self.procs.values():
            m = VHOST_WORKER.match(p.comm)
            if m and not p.argv:
                vhost_kthreads.setdefault(int(m.group(1)), []).append(p.pid)
        for p in self.procs.values():
            # A QEMU that is exiting, or a zombie not reaped yet, has released its memory: its cmdline reads
            # empty and only its main thread is left. It keeps its comm, but is no VM to watch or tune.
            if p.argv and (is_qemu_argv0(p.argv[0]) or p.comm.startswith("qemu-system")):
                vm = self.vm(p, vhost_kthreads)
                if vm is not None:
                    self.snap.vms.append(vm)
        self.sockets_and_backends()
        self.snap.threads = sorted(self.threads.values(), key=lambda t: (t.pid, t.tid))

    def sockets_and_backends(self) -> None:
        sockets: list[VhostUserSocketInfo] = []
        for vm in self.snap.vms:
            for nd in vm.netdevs:
                if nd.kind != "vhost-user":
                    continue
                if not nd.socket_path:
                    self.problem(f"netdev {nd.id} of VM pid {vm.pid}: its vhost-user socket path is unknown.")
                    continue
                sockets.append(vm_socket(self.unix, vm, nd, nd.socket_path))
        # Back-ends recognised by their command line, whatever their front-end (e.g. DPDK virtio-user).
        seen = {(s.path, s.backend_pid) for s in sockets}
        for p in self.procs.values():
            if not _is_backend_argv(p.comm, p.argv):
                continue
            for path in paths_in_argv(p.argv):
                if (path, p.pid) in seen:
                    continue
                s = backend_socket(self.unix, p.pid, path)
                if s is not None:
                    sockets.append(s)
        # Front-ends other than QEMU (DPDK virtio-user): their peer is a back-end whatever its command line
        # (e.g. vhtune's back-end running inside a test process).
        for p in self.procs.values():
            if not _is_frontend_argv(p.argv):
                continue
            for path in paths_in_argv(p.argv):
                if any(s.path == path and s.frontend_pid == p.pid for s in sockets):
                    continue
                s = frontend_socket(self.unix, p.pid, path)
                if s is not None:
                    sockets.append(s)
        vm_pids = {vm.pid for vm in self.snap.vms}
        for s in sockets:
            if s.vm_pid is None and s.frontend_pid in vm_pids:
                s.vm_pid = s.frontend_pid
        self.snap.sockets = sockets
        by_backend: dict[int, list[VhostUserSocketInfo]] = {}
        for s in sockets:
            if s.backend_pid is not None and s.backend_pid not in vm_pids:
                by_backend.setdefault(s.backend_pid, []).append(s)
        for pid, socks in sorted(by_backend.items()):
            be = self.backend(pid, socks)
            if be is not None:
                self.snap.backends.append(be)
        served = {b.pid for b in self.snap.backends}
        fronts = {s.frontend_pid for s in sockets if s.backend_pid in served and s.frontend_pid is not None}
        # A process that is a back-end itself keeps its back-end roles; a VM's threads were read above.
        for pid in sorted(fronts - vm_pids - served):
            if pid in self.procs:
                self.frontend(pid)
        for vm in self.snap.vms:
            if vm.vhost_tids or any(nd.kind == "tap" and nd.vhost for nd in vm.netdevs):
                self.snap.backends.append(
                    BackendInfo(
                        pid=vm.pid,
                        kind="vhost-net",
                        comm=f"vhost-{vm.pid}",
                        thread_tids=list(vm.vhost_tids),
                        frontend_pids=[vm.pid],
                    )
                )


def _why(exc: BaseException) -> str:
    if isinstance(exc, VhtuneError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _host_identity(fs: ProcFS) -> tuple[str, str]:
    def read(name: str, fallback: str) -> str:
        try:
            return (fs.proc / "sys/kernel" / name).read_text().strip() or fallback
        except OSError:
            return fallback

    return read("hostname", socket.gethostname()), read("osrelease", os.uname().release)


def discover(
    root: Path = Path("/"),
    *,
    link_lister: NetnsAccess | None = None,
    guest_memory_numa: bool = True,
    tun_netns: TunNetns | None = None,
) -> Snapshot:
    """Take one snapshot of the VMs, threads, taps, vhost-user sockets and back-ends on this host.

    ``root``: where /proc and /sys are read from (a fixture tree in tests). ``link_lister``: per-netns
    link listing and unix-socket peers (default: the real host; when ``root`` is not "/", the files
    recorded under ``root/vhtune-netns``, none if absent). ``tun_netns``: the netns of each tun fd's device
    (default: the kernel's TUNGETDEVNETNS on the real host; none when ``root`` is not "/": a tree's pids are
    not this host's, and its taps are looked up by name). ``guest_memory_numa``: read
    /proc/PID/numa_maps (walks the page tables of every VM; turn off for the cheapest pass). What cannot
    be seen lands in
    ``Snapshot.problems``; only an unreadable /proc raises (DiscoveryError).
    """
    fs = ProcFS(root)
    if link_lister is None:
        if Path(root) != Path("/"):
            link_lister = RecordedNetns(Path(root) / RECORDED_NETNS_DIR)
        else:
            link_lister = HostNetns(proc=fs.proc, run_netns=Path(root) / "run" / "netns")
    hostname, kernel = _host_identity(fs)
    snap = Snapshot(taken_at=time.time(), hostname=hostname, kernel=kernel)
    if tun_netns is None:
        tun_netns = device_netns if Path(root) == Path("/") else (lambda pid, fds: {})
    _Walk(fs, link_lister, snap, guest_memory_numa, tun_netns).run()
    return snap
