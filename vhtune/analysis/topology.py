"""Who is who in a recording: data paths ("paths") built from the discovery snapshot stored in the manifest.

A path is one VM's (or front-end's) network data path: its front-end process (QEMU, a DPDK virtio-user, the
lab's KVM VM), its back-end (a vhost-user process or the VM's vhost-net workers), their threads, the taps the
back-end holds, and the NUMA placement. Detectors speak about paths, threads and taps; the per-path metrics
join the tables through the maps built here (pid → path, (pid, tid) → path, tap → path).

A thread is (pid, tid): a recording can outlive a process, and once pid_max wraps a new thread may get the tid an
exited thread of another process had. Lookups by tid alone are for callers that have no pid.

Without a snapshot (a recording made with ``-p`` of unknown processes) every process with a back-end thread
becomes a path of its own and the taps are shared among them only when there is exactly one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from vhtune.discover.model import tap_ref

BACKEND_ROLES = ("vhost-worker", "backend-worker")
# Threads that carry a path's packets (discovery's roles): vCPUs, back-end workers, non-VM front-ends' lcores.
DATAPATH_ROLES = ("vcpu", *BACKEND_ROLES, "frontend")


@dataclass
class Path:
    name: str  # the subject used in findings: the VM's name, or "<comm>-<pid>"
    frontend_pids: list[int] = field(default_factory=list)
    backend_pid: int | None = None
    backend_kind: str = "unknown"  # vhtune / dpdk / ovs / vhost-net / unknown
    backend_tids: list[int] = field(default_factory=list)
    vcpu_tids: list[int] = field(default_factory=list)
    taps: list[str] = field(default_factory=list)
    memory_nodes: list[int] = field(default_factory=list)
    control_socket: str | None = None
    tunables: dict[str, Any] = field(default_factory=dict)  # the vhtune back-end's, when the recording has them
    netdevs: list[dict[str, Any]] = field(default_factory=list)  # the VM's -netdev ids, kinds and queue pairs

    @property
    def pids(self) -> list[int]:
        return sorted({*self.frontend_pids, *([self.backend_pid] if self.backend_pid is not None else [])})


@dataclass
class Topology:
    paths: list[Path]
    threads: dict[tuple[int, int], dict[str, Any]]  # (pid, tid) → the snapshot's ThreadInfo as a dict
    taps: dict[str, dict[str, Any]]  # ifname → TapInfo as a dict (the first netns's, when a name is in several)
    cpu_node: dict[int, int]  # CPU → NUMA node
    vm_names: dict[int, str]  # front-end pid → name
    # (netns, ifname) → TapInfo as a dict: one netns per VM (Kata) gives several taps of one name
    tap_info: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _tid_index: tuple[int, dict[int, dict[str, Any]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def thread(self, tid: int, pid: int | None = None) -> dict[str, Any]:
        """Discovery's (or the recording's) info on thread (pid, tid), {} when unknown; with no pid, the last one
        seen with that tid (several pids may have had it)."""
        if pid is not None:
            return self.threads.get((int(pid), int(tid)), {})
        return self._by_tid().get(int(tid), {})

    def pids_of_tid(self, tid: int) -> list[int]:
        """Every pid a thread with this tid had in the recording (more than one: the tid was reused)."""
        return self._pids_by_tid().get(int(tid), [])

    def _pids_by_tid(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for pid, tid in sorted(self.threads):
            out.setdefault(tid, []).append(pid)
        return out

    def _by_tid(self) -> dict[int, dict[str, Any]]:
        if self._tid_index is None or self._tid_index[0] != len(self.threads):  # rebuilt when threads were added
            self._tid_index = (len(self.threads), {t: info for (_p, t), info in self.threads.items()})
        return self._tid_index[1]

    def tap(self, ifname: str, netns: str | None) -> dict[str, Any]:
        """The discovered tap ``ifname`` of ``netns`` ({} when discovery did not see it); by name alone when
        the netns is unknown ("?", or a recording from before taps were keyed by netns)."""
        if netns in (None, "", "?"):
            return self.taps.get(ifname, {})
        return self.tap_info.get((netns, ifname), {})

    def path_of_tap_key(self) -> dict[tuple[str, str], str]:
        """(netns, ifname) → path: the path of a process holding that very tap, else the path its name is on."""
        by_pid, by_name = self.path_of_pid(), self.path_of_tap()
        out: dict[tuple[str, str], str] = {}
        for key, t in self.tap_info.items():
            owners = [by_pid[int(p)] for p in t.get("owner_pids", []) if int(p) in by_pid]
            path = owners[0] if owners else by_name.get(key[1])
            if path is not None:
                out[key] = path
        return out

    def tap_refs(self, path: Path) -> list[str]:
        """``path``'s taps as tables name them (``NETNS/NAME`` outside the root netns, see tap_ref): the ones its
        processes hold, plus recorded taps discovery did not see, by name."""
        keys = [key for key, p in self.path_of_tap_key().items() if p == path.name]
        named = {name for _ns, name in keys}
        return sorted(tap_ref(*key) for key in keys) + [t for t in path.taps if t not in named]

    def path_of_pid(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for p in self.paths:
            for pid in p.pids:
                out.setdefault(pid, p.name)
        return out

    def path_of_tid(self) -> dict[int, str]:
        """tid → path, for callers without a pid (a tid reused by another process maps to the first path)."""
        out: dict[int, str] = {}
        for p in self.paths:
            for tid in (*p.backend_tids, *p.vcpu_tids):
                out.setdefault(tid, p.name)
        return out

    def path_of_thread(self) -> dict[tuple[int, int], str]:
        """(pid, tid) → path of the paths' back-end and vCPU threads. A tid known under several pids belongs to
        a path under the pids of that path only (its back-end's, its front-end's); one under a pid outside
        every path (a vhost-net kernel worker) maps under each pid it had."""
        pids_of = self._pids_by_tid()
        out: dict[tuple[int, int], str] = {}
        for p in self.paths:
            for tids, own in (
                (p.backend_tids, [p.backend_pid] if p.backend_pid is not None else []),
                (p.vcpu_tids, p.frontend_pids),
            ):
                for tid in tids:
                    had = pids_of.get(tid, [])
                    mine = [x for x in had if x in own] or had or own
                    for pid in mine:
                        out.setdefault((pid, tid), p.name)
        return out

    def path_of_tap(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for p in self.paths:
            for t in p.taps:
                out.setdefault(t, p.name)
        return out

    def by_name(self, name: str) -> Path | None:
        return next((p for p in self.paths if p.name == name), None)


def _taps_held_by(tap_info: dict[tuple[str, str], dict[str, Any]], pid: int) -> list[str]:
    """Names of the taps ``pid`` holds, in every netns: with one netns per VM (Kata) each VM holds its own
    "tap0_kata", so a lookup by name alone would give all of them to the first VM."""
    return sorted({name for (_ns, name), t in tap_info.items() if pid in [int(p) for p in t.get("owner_pids", [])]})


def _vm_name(vm: dict[str, Any]) -> str:
    return str(vm.get("name") or f"vm-{vm['pid']}")


def from_snapshot(snap: dict[str, Any] | None, threads: pd.DataFrame) -> Topology:
    """Paths from the manifest's ``discovery`` (may be None) plus the threads table (tid, pid, comm, role)."""
    snap = snap or {}
    vms = {int(v["pid"]): v for v in snap.get("vms", [])}
    thread_info = {(int(t["pid"]), int(t["tid"])): t for t in snap.get("threads", [])}
    taps: dict[str, dict[str, Any]] = {}
    tap_info: dict[tuple[str, str], dict[str, Any]] = {}
    for t in snap.get("taps", []):
        taps.setdefault(str(t["name"]), t)
        tap_info[(str(t.get("netns") or "root"), str(t["name"]))] = t
    cpu_node = {int(c["cpu"]): int(c.get("node", 0)) for c in snap.get("cpus", [])}
    recorded = threads.drop_duplicates(["pid", "tid"])[["pid", "tid", "comm", "role"]] if len(threads) else None
    if recorded is not None:
        for r in recorded.to_dict("records"):
            pid, tid = int(r["pid"]), int(r["tid"])
            thread_info.setdefault((pid, tid), {"pid": pid, "tid": tid, "comm": r["comm"], "role": r["role"]})
    comm_of_pid: dict[int, str] = {}
    for t in thread_info.values():
        if int(t["tid"]) == int(t["pid"]):
            comm_of_pid[int(t["pid"])] = str(t["comm"])

    def tids(pid: int, roles: tuple[str, ...]) -> list[int]:
        return sorted(t for (p, t), i in thread_info.items() if p == pid and i.get("role") in roles)

    def taps_of(pid: int) -> list[str]:
        return _taps_held_by(tap_info, pid)

    paths: list[Path] = []
    claimed_vms: set[int] = set()
    for b in snap.get("backends", []):
        bpid = int(b["pid"])
        fronts = [int(p) for p in b.get("frontend_pids", [])] or [-1]
        btids = [int(t) for t in b.get("thread_tids", [])] or tids(bpid, BACKEND_ROLES)
        for fp in fronts:
            vm = vms.get(fp)
            if vm is not None:
                name = _vm_name(vm)
                claimed_vms.add(fp)
            elif fp > 0:
                name = f"{comm_of_pid.get(fp, 'frontend')}-{fp}"
            else:
                name = f"{b.get('comm', 'backend')}-{bpid}"
            paths.append(
                Path(
                    name=name,
                    frontend_pids=[fp] if fp > 0 else [],
                    backend_pid=bpid,
                    backend_kind=str(b.get("kind", "unknown")),
                    backend_tids=btids,
                    vcpu_tids=[int(t) for t in vm.get("vcpu_tids", [])] if vm else tids(fp, ("vcpu",)),
                    taps=taps_of(bpid),
                    memory_nodes=[int(n) for n in vm.get("memory_nodes", [])] if vm else [],
                    control_socket=b.get("control_socket"),
                    netdevs=netdevs_of(vm),
                )
            )
    for pid, vm in vms.items():
        if pid in claimed_vms:
            continue
        vhost = [int(t) for t in vm.get("vhost_tids", [])]
        ifnames = [str(n["ifname"]) for n in vm.get("netdevs", []) if n.get("ifname")]
        paths.append(
            Path(
                name=_vm_name(vm),
                frontend_pids=[pid],
                backend_kind="vhost-net" if vhost else "unknown",
                backend_tids=vhost,
                vcpu_tids=[int(t) for t in vm.get("vcpu_tids", [])] or tids(pid, ("vcpu",)),
                taps=sorted(set(ifnames) | set(taps_of(pid))),
                memory_nodes=[int(n) for n in vm.get("memory_nodes", [])],
                netdevs=netdevs_of(vm),
            )
        )
    known = {pid for p in paths for pid in p.pids}
    orphan_pids = sorted(
        {int(i["pid"]) for i in thread_info.values() if i.get("role") in BACKEND_ROLES} - known - set(vms)
    )
    for pid in orphan_pids:
        paths.append(
            Path(
                name=f"{comm_of_pid.get(pid, 'backend')}-{pid}",
                backend_pid=pid,
                backend_tids=tids(pid, BACKEND_ROLES),
                taps=taps_of(pid),
            )
        )
    names = {int(v["pid"]): _vm_name(v) for v in vms.values()}
    _unique_names(paths)
    return Topology(paths, thread_info, taps, cpu_node, names, tap_info)


def netdevs_of(vm: dict[str, Any] | None) -> list[dict[str, Any]]:
    """id, kind and queue pairs of each -netdev on the VM's command line (discovery's NetdevInfo)."""
    out = []
    for n in (vm or {}).get("netdevs", []):
        try:
            out.append({"id": str(n["id"]), "kind": str(n.get("kind", "")), "queues": int(n.get("queues") or 1)})
        except (KeyError, TypeError, ValueError):
            continue  # a snapshot from an older or damaged recording: the path just knows less
    return out


def _unique_names(paths: list[Path]) -> None:
    seen: dict[str, int] = {}
    for p in paths:
        n = seen.get(p.name, 0)
        seen[p.name] = n + 1
        if n:
            p.name = f"{p.name}#{n + 1}"


def add_counted_backends(topo: Topology, pids: list[int]) -> None:
    """Back-ends whose counters the recording has but discovery did not place on a path get a path of their own."""
    known = {pid for p in topo.paths for pid in p.pids}
    for pid in sorted(set(pids) - known):
        mine = {t: i for (p, t), i in topo.threads.items() if p == pid}
        workers = [
            t
            for t, i in mine.items()
            if i.get("role") in BACKEND_ROLES or str(i.get("comm", "")).startswith("vhtune-q")
        ]
        comm = str(mine.get(pid, {}).get("comm", "backend"))
        owned = _taps_held_by(topo.tap_info, pid)
        topo.paths.append(
            Path(name=f"{comm}-{pid}", backend_pid=pid, backend_kind="vhtune", backend_tids=sorted(workers), taps=owned)
        )
    _unique_names(topo.paths)


def add_backend_tunables(topo: Topology, by_pid: dict[str, Any]) -> None:
    """``backend_tunables.json`` ({pid: {"control": path, burst, event_idx, ...}}) → the paths of those back-ends."""
    for p in topo.paths:
        t = by_pid.get(str(p.backend_pid))
        if isinstance(t, dict):
            p.control_socket = p.control_socket or t.get("control")
            p.tunables = {k: v for k, v in t.items() if k != "control"}


def add_recorded_taps(topo: Topology, tap_names: list[str]) -> None:
    """Taps no path owns (discovery did not see who holds them) go to the only path, when there is one."""
    owned = {t for p in topo.paths for t in p.taps}
    if len(topo.paths) == 1:
        p = topo.paths[0]
        p.taps = sorted(set(p.taps) | {t for t in tap_names if t not in owned})
