"""Writing targets into the probes' maps and reading per-interval deltas back.

Per-CPU arrays (threads, taps, fds) hold cumulative counters in slots: a slot is zeroed before its target
is published in the lookup map, and this class keeps the previous reading to return deltas. Hash maps
(competitors, drops, irqs, wakes) are read-and-cleared with BPF_MAP_LOOKUP_AND_DELETE_BATCH.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vhtune.counters import counter_deltas
from vhtune.discover.model import tap_ref
from vhtune.errors import ProbeError
from vhtune.probes import layouts as L
from vhtune.probes.loader import Probes
from vhtune.probes.netdev import netns_inode, read_counters
from vhtune.probes.targets import ROLE_KICK, FdTarget, TapKey, TapTarget, TargetSet, ThreadTarget

THREAD_FIELDS = [f[0] for f in L.ThreadStats._fields_]
TAP_FIELDS = [f[0] for f in L.TapStats._fields_]
NOTIFY_FIELDS = [f[0] for f in L.NotifyStats._fields_]


class SlotTable:
    """Stable small integers for targets (array indexes in the BPF maps)."""

    def __init__(self, size: int, what: str) -> None:
        self.size = size
        self.what = what
        self.slots: dict[Any, int] = {}
        self.free = list(range(size - 1, -1, -1))

    def take(self, key: Any) -> int:
        if not self.free:
            raise ProbeError(f"more than {self.size} {self.what} targets", hint="raise the probe map size or narrow -p")
        slot = self.free.pop()
        self.slots[key] = slot
        return slot

    def release(self, key: Any) -> int:
        slot = self.slots.pop(key)
        self.free.append(slot)
        return slot


class FilterIndex:
    """A tid_filter / tgid_filter array (struct vht_id_ent per id & FILTER_MASK): the one watched id behind an
    entry with its value (thread slot, fd row), so the probe answers a hit from the array alone; the value
    VHT_ID_HASH when several watched ids share the entry or one has no value, sending the probe to the hash map
    that always holds every target."""

    def __init__(self, table: Any, value_of: Callable[[int], int | None]) -> None:
        self.table = table
        self.value_of = value_of
        self.ids: dict[int, set[int]] = {}  # entry index → watched ids behind it

    def add(self, ident: int) -> None:
        self.ids.setdefault(ident & L.FILTER_MASK, set()).add(ident)
        self._publish(ident & L.FILTER_MASK)

    def remove(self, ident: int) -> None:
        self.ids.get(ident & L.FILTER_MASK, set()).discard(ident)
        self._publish(ident & L.FILTER_MASK)

    def _publish(self, idx: int) -> None:
        ids = self.ids.get(idx) or set()
        ent = L.IdEnt(0, L.ID_NONE)
        if len(ids) == 1:
            ident = next(iter(ids))
            val = self.value_of(ident)
            ent = L.IdEnt(ident, val) if val is not None else L.IdEnt(0, L.ID_HASH)
        elif ids:
            ent = L.IdEnt(0, L.ID_HASH)
        else:
            self.ids.pop(idx, None)
        self.table[ct.c_uint32(idx)] = ent


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # targets that could not be watched, and why

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.skipped)


@dataclass
class Deltas:
    """One interval's worth of counters (all deltas), keyed by target."""

    threads: dict[int, dict[str, int]] = field(default_factory=dict)  # tid → THREAD_FIELDS
    hist: dict[int, list[int]] = field(default_factory=dict)  # tid → RUNQ_BUCKETS counts
    taps: dict[TapKey, dict[str, int]] = field(default_factory=dict)  # (netns, name) → TAP_FIELDS
    fds: dict[tuple[int, int], dict[str, int]] = field(default_factory=dict)  # (pid, fd) → NOTIFY_FIELDS
    competitors: list[dict[str, Any]] = field(default_factory=list)
    drops: list[dict[str, Any]] = field(default_factory=list)
    irqs: list[dict[str, Any]] = field(default_factory=list)
    wakes: list[dict[str, Any]] = field(default_factory=list)
    vhost: list[dict[str, Any]] = field(default_factory=list)
    lost: dict[str, int] = field(default_factory=dict)


def _sum_struct(values: Any, fields: list[str]) -> list[int]:
    return [sum(int(getattr(v, f)) for v in values) for f in fields]


def _read_and_clear(table: Any) -> list[tuple[Any, Any]]:
    try:
        return list(table.items_lookup_and_delete_batch())
    except Exception:  # older kernels: no batch ops; read then delete one by one
        items = list(table.items())
        for k, _ in items:
            with contextlib.suppress(KeyError):
                del table[k]
        return items


class ProbeMaps:
    def __init__(self, probes: Probes) -> None:
        self.p = probes
        self.bpf = probes.bpf
        cfg = probes.config
        self.thread_slots = SlotTable(cfg.max_threads, "thread")
        self.tap_slots = SlotTable(cfg.max_taps, "tap")
        self.fd_slots = SlotTable(cfg.max_fds, "eventfd")
        self.targets = TargetSet()
        self._last_threads: dict[int, list[int]] = {}
        self._last_hist: dict[int, list[int]] = {}
        self._last_taps: dict[TapKey, list[int]] = {}
        self._last_fds: dict[tuple[int, int], list[int]] = {}
        self._last_lost = [0] * len(L.LOST_NAMES)
        self._tap_dir: dict[int, list[TapKey]] = {}  # tap_dir index → watched taps whose names hash there
        self._tap_inum: dict[TapKey, int] = {}  # the netns inode each watched tap's `taps` key carries
        # Lines for the manifest and the live view: watched taps the probes cannot tell apart (tracepoint variant).
        self.tap_warnings: list[str] = []
        # Counters variant: packets/bytes come from the taps' own counters, only drops from a program.
        self._tap_counters = bool(cfg.net_offsets) and probes.has("net")
        # Continue from the map's value: a second ProbeMaps on the same probes must not reuse a generation
        # that entries of the first one still carry.
        self._tap_gen = int(self._t("tap_gen")[ct.c_uint32(0)].value) if self._tap_counters else 0
        self._proc_fds: dict[int, set[int]] = {}  # tgid → its watched fds
        self._rows: dict[int, int] = {}  # tgid → its fd_direct row
        self._free_rows = list(range(L.FD_ROWS - 1, -1, -1))
        self._tid_filter = (
            FilterIndex(self._t("tid_filter"), self.thread_slots.slots.get) if probes.has("sched") else None
        )
        self._tgid_filter = FilterIndex(self._t("tgid_filter"), self._rows.get) if probes.has("notify") else None

    def _t(self, name: str) -> Any:
        return self.bpf[name.encode()]

    def _filter(self, table: str, index: int, delta: int) -> None:
        """Count a target in (or out of) a pre-filter array entry (see VHT_FILTER_SIZE in vhtune.h)."""
        t = self._t(table)
        key = ct.c_uint32(index)
        t[key] = ct.c_uint32(max(0, int(t[key].value) + delta))

    # --- targets ----------------------------------------------------------------------------------------
    def apply(self, want: TargetSet) -> Changes:
        """Make the maps watch exactly ``want`` (families that are not attached ignore their targets)."""
        ch = Changes()
        if self.p.has("sched"):
            for tid in [t for t in self.targets.threads if t not in want.threads]:
                self._drop_thread(tid)
                ch.removed.append(f"thread {tid}")
            for tid, t in want.threads.items():
                old = self.targets.threads.get(tid)
                if old is not None and old.pid != t.pid:
                    # The tid now names a thread of another process (pid_max wrapped): a new thread, whose
                    # counters start at zero, not the old one's carried on. A rename keeps its counters.
                    self._drop_thread(tid)
                    ch.removed.append(f"thread {tid} (pid {old.pid})")
                if tid not in self.targets.threads:
                    if not _try(ch, f"thread {tid}", self._add_thread, t):
                        continue
                    ch.added.append(f"thread {tid} ({t.comm}, {t.role})")
                self.targets.threads[tid] = t
        if self.p.has("net"):
            for tkey in [k for k in self.targets.taps if k not in want.taps]:
                self._drop_tap(tkey)
                ch.removed.append(f"tap {tap_ref(*tkey)}")
            for tkey, tap in sorted(want.taps.items()):
                if tkey not in self.targets.taps:
                    if not _try(ch, f"tap {tap_ref(*tkey)}", self._add_tap, tap):
                        continue
                    ch.added.append(f"tap {tap_ref(*tkey)}")
                self.targets.taps[tkey] = tap
            self.tap_warnings = self._name_clashes(want)
        if self.p.has("notify"):
            for key in [k for k in self.targets.fds if k not in want.fds]:
                self._drop_fd(key)
                ch.removed.append(f"fd {key[0]}:{key[1]}")
            for key, fdt in want.fds.items():
                if key in self.targets.fds and self.targets.fds[key] != fdt:
                    self._drop_fd(key)  # same fd, new meaning (a re-used number): restart its counters
                if key not in self.targets.fds:
                    if not _try(ch, f"fd {key[0]}:{key[1]}", self._add_fd, fdt):
                        continue
                    ch.added.append(f"fd {key[0]}:{key[1]} ({fdt.role} q{fdt.queue})")
                self.targets.fds[key] = fdt
        self.p.activate("sched", bool(self.targets.threads))
        self.p.activate("net", bool(self.targets.taps))
        self.p.activate("notify", bool(self.targets.fds))
        return ch

    def _add_thread(self, t: ThreadTarget) -> None:
        slot = ct.c_uint32(self.thread_slots.take(t.tid))
        stats, hist, ts = self._t("thread_stats"), self._t("runq_hist"), self._t("thread_ts")
        stats[slot] = stats.Leaf()
        hist[slot] = hist.Leaf()
        # A thread running when it becomes a target has no switch-in event yet: start its slice now, or a
        # thread that never switches (a polling back-end alone on its CPU) would show 0 % until it does.
        ts[slot] = L.ThreadTs(time.monotonic_ns() if _running(t.pid, t.tid) else 0, 0, -1, 0)
        self._t("targets")[ct.c_uint32(t.tid)] = slot
        assert self._tid_filter is not None
        self._tid_filter.add(t.tid)  # published last: the slot is clean by now
        self._last_threads[t.tid] = [0] * len(THREAD_FIELDS)
        self._last_hist[t.tid] = [0] * L.RUNQ_BUCKETS

    def _drop_thread(self, tid: int) -> None:
        assert self._tid_filter is not None
        self._tid_filter.remove(tid)
        with contextlib.suppress(KeyError):
            del self._t("targets")[ct.c_uint32(tid)]
        slot = ct.c_uint32(self.thread_slots.release(tid))
        ts = self._t("thread_ts")[slot]
        if ts.wait_cpu >= 0:  # it left while counted as waiting: undo its share of cpu_wait
            cw_table = self._t("cpu_wait")
            cpu = ct.c_uint32(ts.wait_cpu)
            cw = cw_table[cpu]
            cw_table[cpu] = L.CpuWait(max(0, cw.waiters - 1), cw.wait_start)
        self._t("thread_ts")[slot] = L.ThreadTs(0, 0, -1, 0)
        self._last_threads.pop(tid, None)
        self._last_hist.pop(tid, None)
        del self.targets.threads[tid]

    def _add_tap(self, t: TapTarget) -> None:
        key = t.key
        if self._tap_counters:  # drops are matched on (name, netns inode): see probes/net_counters.bpf.c
            inum = netns_inode(t.netns)
            if inum is None:
                raise ProbeError(f"the network namespace {t.netns} of tap {t.name} is gone")
        else:  # the tracepoints name the device only: one watched tap per name
            inum = 0
            other = next((k for k in self._tap_inum if k[1] == t.name), None)
            if other is not None:
                raise ProbeError(
                    f"the tracepoint net variant matches taps by name only and already watches {t.name} of "
                    f"netns {other[0]}, whose row counts this one's packets and drops too"
                )
        bkey = L.tap_key(t.name, inum)  # validates the name before a slot is taken
        slot = ct.c_uint32(self.tap_slots.take(key))
        self._tap_inum[key] = inum
        self._t("taps")[bkey] = slot
        idx = L.tap_dir_index(t.name)
        self._tap_dir.setdefault(idx, []).append(key)
        self._publish_tap_dir(idx)
        if self._tap_counters:
            self.targets.taps[key] = t  # read_counters below needs its netns
            self._last_taps[key] = self._tap_counter_values([key]).get(key, [0] * len(TAP_FIELDS))
            self._bump_tap_gen()
            return
        stats = self._t("tap_stats")
        stats[slot] = stats.Leaf()
        self._filter("ifname_len_filter", len(t.name.encode()) + 1, +1)
        self._last_taps[key] = [0] * len(TAP_FIELDS)

    def _drop_tap(self, key: TapKey) -> None:
        name = key[1]
        if not self._tap_counters:
            self._filter("ifname_len_filter", len(name.encode()) + 1, -1)
        idx = L.tap_dir_index(name)
        self._tap_dir[idx].remove(key)
        self._publish_tap_dir(idx)
        del self._t("taps")[L.tap_key(name, self._tap_inum.pop(key))]
        if self._tap_counters:
            self._bump_tap_gen()
        self.tap_slots.release(key)
        self._last_taps.pop(key, None)
        del self.targets.taps[key]

    def _name_clashes(self, want: TargetSet) -> list[str]:
        """One line per tap name wanted in several netns when the probes match by name only."""
        if self._tap_counters:
            return []
        by_name: dict[str, list[str]] = {}
        for netns, name in sorted(want.taps):
            by_name.setdefault(name, []).append(netns)
        out = []
        for name, spaces in by_name.items():
            if len(spaces) > 1:
                held = next((k[0] for k in self._tap_inum if k[1] == name), spaces[0])
                out.append(
                    f"taps named {name} live in netns {', '.join(spaces)}: the tracepoint net variant matches taps "
                    f"by name only, so the row of netns {held} counts all of them and the others have no row "
                    "(the counters variant, which needs /sys/kernel/btf/vmlinux, tells them apart)"
                )
        return out

    def _bump_tap_gen(self) -> None:
        """Invalidate the probe's per-device cache (dev_cache in probes/net_counters.bpf.c)."""
        self._tap_gen = (self._tap_gen + 1) & 0xFFFFFFFF
        self._t("tap_gen")[ct.c_uint32(0)] = ct.c_uint32(self._tap_gen)

    def _tap_counter_values(self, keys: list[TapKey]) -> dict[TapKey, list[int]]:
        """TAP_FIELDS from the taps' own counters (cumulative). tun counts tx_packets when its reader reads a
        frame (tun_put_user) and tx_dropped when the ring is full, so tx_queued = tx_packets + tx_dropped: every
        frame the stack handed to the tap. rx_bytes counts whole frames (netif_receive_skb's len lacks the
        14-byte Ethernet header the tracepoint variant sees)."""
        # A tap named with --tap that discovery did not find has netns "?": look for it where vhtune runs.
        taps = [self.targets.taps[k] for k in keys if k in self.targets.taps]
        want = {("root" if t.netns == "?" else t.netns, t.name): t.key for t in taps}
        got = read_counters(want)
        return {
            want[k]: [c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes, c.tx_errors, c.tx_packets + c.tx_dropped]
            for k, c in got.items()
        }

    def _publish_tap_dir(self, idx: int) -> None:
        """One tap at ``idx``: the probe compares its name and netns inode in place; several (names that collide,
        or one name in several netns): it asks the `taps` hash."""
        keys = self._tap_dir.get(idx) or []
        if not keys:
            self._tap_dir.pop(idx, None)
            ent = L.TapEnt(0, 0, 0, 0, 0, 0)
        elif len(keys) == 1:
            k = keys[0]
            ent = L.TapEnt(*L.tap_name_words(k[1]), self.tap_slots.slots[k], L.TAP_VALID, self._tap_inum[k], 0)
        else:
            ent = L.TapEnt(0, 0, 0, L.TAP_VALID | L.TAP_SHARED, 0, 0)
        self._t("tap_dir")[ct.c_uint32(idx)] = ent

    def _add_fd(self, f: FdTarget) -> None:
        key = (f.pid, f.fd)
        slot = self.fd_slots.take(key)
        stats = self._t("notify_stats")
        stats[ct.c_uint32(slot)] = stats.Leaf()
        may_inject = f.role != ROLE_KICK  # a call eventfd, or one whose role is unknown, may be an irqfd
        value = ct.c_uint32(slot | L.FD_VALID | (L.FD_MAY_INJECT if may_inject else 0))
        self._t("notify_fds")[L.FdKey(f.pid, f.fd)] = value  # the hash holds every watched fd
        fds = self._proc_fds.setdefault(f.pid, set())
        if not fds and self._free_rows:
            self._rows[f.pid] = self._free_rows.pop()
        fds.add(f.fd)
        if f.pid in self._rows and f.fd < L.FD_COLS:
            self._t("fd_direct")[ct.c_uint32(self._rows[f.pid] * L.FD_COLS + f.fd)] = value
        assert self._tgid_filter is not None
        self._tgid_filter.add(f.pid)  # last: the fd's entries are in place by now
        self._last_fds[key] = [0] * len(NOTIFY_FIELDS)

    def _drop_fd(self, key: tuple[int, int]) -> None:
        pid, fd = key
        row = self._rows.get(pid)
        if row is not None and fd < L.FD_COLS:
            self._t("fd_direct")[ct.c_uint32(row * L.FD_COLS + fd)] = ct.c_uint32(0)
        with contextlib.suppress(KeyError):
            del self._t("notify_fds")[L.FdKey(pid, fd)]
        fds = self._proc_fds.get(pid, set())
        fds.discard(fd)
        if not fds:
            self._proc_fds.pop(pid, None)
            if row is not None:
                self._free_rows.append(self._rows.pop(pid))
            assert self._tgid_filter is not None
            self._tgid_filter.remove(pid)
        self.fd_slots.release(key)
        self._last_fds.pop(key, None)
        del self.targets.fds[key]

    # --- reading ----------------------------------------------------------------------------------------
    def read(self) -> Deltas:
        d = Deltas()
        if self.p.has("sched"):
            self._read_threads(d)
            self._read_competitors(d)
        if self.p.has("net"):
            self._read_taps(d)
        if self.p.has("notify"):
            self._read_fds(d)
        if self.p.has("kvm"):
            self._read_kvm(d)
        if self.p.variants.get("vhost") == "kprobe":
            for k, v in _read_and_clear(self._t("vhost_events")):
                kind = L.VHOST_KINDS.get(k.kind, str(k.kind))
                d.vhost.append({"tid": k.tid, "pid": v.tgid, "kind": kind, "vq": k.vq, "count": v.count})
        cur = _sum_struct_lost(self._t("lost"))
        d.lost = {n: c - p for n, c, p in zip(L.LOST_NAMES, cur, self._last_lost, strict=True)}
        self._last_lost = cur
        return d

    def _read_threads(self, d: Deltas) -> None:
        stats, hist, tstate = self._t("thread_stats"), self._t("runq_hist"), self._t("thread_ts")
        for tid, slot in self.thread_slots.slots.items():
            key = ct.c_uint32(slot)
            now = time.monotonic_ns()  # bpf_ktime_get_ns() is CLOCK_MONOTONIC too
            cur = _sum_struct(stats[key], THREAD_FIELDS)
            # Count the slice in progress too (it is folded into oncpu_ns at the next switch-out, so the
            # cumulative "counted + in progress" never goes backwards).
            since = int(tstate[key].oncpu_since)
            if since and now > since:
                cur[0] += now - since
            last = self._last_threads[tid]
            # A thread that was runnable but not running when it became a target had its slice started at
            # that moment (see _add_thread); its real switch-in restarts it, which could step back: hold.
            cur[0] = max(cur[0], last[0])
            d.threads[tid] = {f: c - p for f, c, p in zip(THREAD_FIELDS, cur, last, strict=True)}
            self._last_threads[tid] = cur
            per_cpu = hist[key]
            hcur = [sum(int(v.b[i]) for v in per_cpu) for i in range(L.RUNQ_BUCKETS)]
            hlast = self._last_hist[tid]
            d.hist[tid] = [c - p for c, p in zip(hcur, hlast, strict=True)]
            self._last_hist[tid] = hcur

    def _read_competitors(self, d: Deltas) -> None:
        for k, v in _read_and_clear(self._t("competitors")):
            d.competitors.append(
                {
                    "tid": k.tid,
                    "cpu": k.cpu,
                    "pid": v.tgid,
                    "comm": v.comm.decode(errors="replace"),
                    "ns": v.ns,
                    "slices": v.slices,
                }
            )

    def _read_taps(self, d: Deltas) -> None:
        if self._tap_counters:
            now = self._tap_counter_values(list(self.tap_slots.slots))
        else:
            stats = self._t("tap_stats")
            now = {n: _sum_struct(stats[ct.c_uint32(s)], TAP_FIELDS) for n, s in self.tap_slots.slots.items()}
        for key in self.tap_slots.slots:
            last = self._last_taps[key]
            cur = now.get(key, last)  # a tap gone from its netns counts nothing until it is let go
            cur_d, last_d = dict(zip(TAP_FIELDS, cur, strict=True)), dict(zip(TAP_FIELDS, last, strict=True))
            d.taps[key] = counter_deltas(cur_d, last_d)
            self._last_taps[key] = cur
        by_slot = {s: k for k, s in self.tap_slots.slots.items()}
        for k, v in _read_and_clear(self._t("drops")):
            key = by_slot.get(k.slot)
            if key is None:
                continue  # the tap was let go since the drop; its counters went with it
            d.drops.append(
                {
                    "netns": key[0],
                    "ifname": key[1],
                    "direction": L.DIRECTIONS.get(k.dir, "?"),
                    "reason": k.reason,
                    "count": _num(v),
                }
            )

    def _read_fds(self, d: Deltas) -> None:
        stats = self._t("notify_stats")
        for key, slot in self.fd_slots.slots.items():
            cur = _sum_struct(stats[ct.c_uint32(slot)], NOTIFY_FIELDS)
            last = self._last_fds[key]
            d.fds[key] = {f: c - p for f, c, p in zip(NOTIFY_FIELDS, cur, last, strict=True)}
            self._last_fds[key] = cur

    def _read_kvm(self, d: Deltas) -> None:
        by_slot = {s: k for k, s in self.fd_slots.slots.items()}
        for k, v in _read_and_clear(self._t("irqs")):
            via = by_slot.get(k.slot) if k.slot != L.NOSLOT else None
            d.irqs.append(
                {
                    "pid": k.tgid,
                    "kind": L.IRQ_KINDS.get(k.kind, str(k.kind)),
                    "gsi": k.gsi,
                    "level": k.level,
                    "via_pid": via[0] if via else None,
                    "via_fd": via[1] if via else None,
                    "count": _num(v),
                }
            )
        for k, v in _read_and_clear(self._t("wakes")):
            d.wakes.append(
                {
                    "tid": _num(k),
                    "pid": v.tgid,
                    "wakeups": v.wakeups,
                    "polled": v.polled,
                    "waited": v.waited,
                    "invalid": v.invalid,
                    "poll_ns": v.poll_ns,
                    "wait_ns": v.wait_ns,
                }
            )


def _try(ch: Changes, what: str, add: Any, target: Any) -> bool:
    """Add one target; a full slot table or a bad name skips it (noted in ``ch``) instead of stopping."""
    try:
        add(target)
    except ProbeError as exc:
        ch.skipped.append(f"{what}: {exc.message}")
        return False
    return True


def _num(v: Any) -> int:
    """bcc hands back ctypes scalars from lookups and plain ints from batch reads."""
    return int(getattr(v, "value", v))


def _running(pid: int, tid: int) -> bool:
    """State R in /proc/PID/task/TID/stat (running or runnable)."""
    try:
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "R"


def _sum_struct_lost(table: Any) -> list[int]:
    out = []
    for i in range(len(L.LOST_NAMES)):
        out.append(sum(int(v) for v in table[ct.c_uint32(i)]))
    return out
