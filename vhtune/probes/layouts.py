"""ctypes mirrors of probes/vhtune.h. ``check_layouts`` compares each mirror's size with the type bcc built
from the C source, so a header edit that is not mirrored here fails at load instead of misreading maps."""

from __future__ import annotations

import ctypes as ct
from typing import Any

from vhtune.errors import ProbeError

RUNQ_BUCKETS = 40  # VHT_RUNQ_BUCKETS
NOSLOT = 0xFFFFFFFF  # VHT_NOSLOT
FD_MAY_INJECT = 0x80000000  # VHT_FD_MAY_INJECT: notify_fds / fd_direct value bit
FD_VALID = 0x40000000  # VHT_FD_VALID: set in every watched fd's value (0 in fd_direct = not watched)
FILTER_MASK = 0xFFFF  # VHT_FILTER_MASK: pre-filter arrays are indexed by id & FILTER_MASK
FD_ROWS = 64  # VHT_FD_ROWS
FD_COLS = 1024  # VHT_FD_COLS
ID_NONE = 0xFFFFFFFE  # VHT_ID_NONE
ID_HASH = 0xFFFFFFFF  # VHT_ID_HASH
TAP_DIR_BITS = 10  # VHT_TAP_DIR_BITS
TAP_VALID = 1  # VHT_TAP_VALID
TAP_SHARED = 2  # VHT_TAP_SHARED
_TAP_K1 = 0x9E3779B97F4A7C15  # VHT_TAP_K1
_TAP_K2 = 0xFF51AFD7ED558CCD  # VHT_TAP_K2
_U64 = (1 << 64) - 1
DIR_RX = 0
DIR_TX = 1
DIRECTIONS = {DIR_RX: "rx", DIR_TX: "tx"}
IRQ_KINDS = {0: "set_irq", 1: "msi"}
VHOST_KINDS = {0: "vhost_signal", 1: "handle_tx_kick", 2: "handle_rx_kick", 3: "tun_sendmsg", 4: "tun_recvmsg"}
LOST_NAMES = (
    "competitor_map_full",
    "drop_map_full",
    "irq_map_full",
    "wake_map_full",
    "skb_owner_update",
    "pending_update",
    "vhost_map_full",
    "reserved",
)


class ThreadStats(ct.Structure):
    _fields_ = [
        ("oncpu_ns", ct.c_uint64),
        ("runq_ns", ct.c_uint64),
        ("runq_count", ct.c_uint64),
        ("wakeups", ct.c_uint64),
        ("vol_switches", ct.c_uint64),
        ("invol_switches", ct.c_uint64),
        ("migrations", ct.c_uint64),
    ]


class Hist(ct.Structure):
    _fields_ = [("b", ct.c_uint64 * RUNQ_BUCKETS)]


class ThreadTs(ct.Structure):
    _fields_ = [
        ("oncpu_since", ct.c_uint64),
        ("wait_since", ct.c_uint64),
        ("wait_cpu", ct.c_int32),
        ("pad", ct.c_uint32),
    ]


class CpuWait(ct.Structure):
    _fields_ = [("waiters", ct.c_int64), ("wait_start", ct.c_uint64)]


class CompKey(ct.Structure):
    _fields_ = [("tid", ct.c_uint32), ("cpu", ct.c_uint32)]


class CompVal(ct.Structure):
    _fields_ = [
        ("ns", ct.c_uint64),
        ("slices", ct.c_uint64),
        ("tgid", ct.c_uint32),
        ("pad", ct.c_uint32),
        ("comm", ct.c_char * 16),
    ]


class IfName(ct.Structure):
    _fields_ = [("name", ct.c_char * 16)]


class TapStats(ct.Structure):
    _fields_ = [
        ("rx_packets", ct.c_uint64),
        ("rx_bytes", ct.c_uint64),
        ("tx_packets", ct.c_uint64),
        ("tx_bytes", ct.c_uint64),
        ("tx_errors", ct.c_uint64),
        ("tx_queued", ct.c_uint64),
    ]


class SkbOwner(ct.Structure):
    _fields_ = [("skb", ct.c_uint64), ("slot", ct.c_uint32), ("dir", ct.c_uint32)]


class DropKey(ct.Structure):
    _fields_ = [("slot", ct.c_uint32), ("dir", ct.c_uint32), ("reason", ct.c_uint32), ("pad", ct.c_uint32)]


class FdKey(ct.Structure):
    _fields_ = [("tgid", ct.c_uint32), ("fd", ct.c_uint32)]


class TapEnt(ct.Structure):
    _fields_ = [
        ("n0", ct.c_uint64),
        ("n1", ct.c_uint64),
        ("slot", ct.c_uint32),
        ("flags", ct.c_uint32),
        ("inum", ct.c_uint32),
        ("pad", ct.c_uint32),
    ]


class TapKey(ct.Structure):
    """struct vht_tap_key: a watched tap's name and its netns inode (0 in the tracepoint variant)."""

    _fields_ = [("name", ct.c_char * 16), ("inum", ct.c_uint32), ("pad", ct.c_uint32)]


class DevEnt(ct.Structure):
    _fields_ = [
        ("dev", ct.c_uint64),
        ("gen", ct.c_uint32),
        ("ifindex", ct.c_int32),
        ("slot", ct.c_uint32),
        ("pad", ct.c_uint32),
    ]


class IdEnt(ct.Structure):
    _fields_ = [("id", ct.c_uint32), ("val", ct.c_uint32)]


class Pending(ct.Structure):
    _fields_ = [("tid", ct.c_uint32), ("slot", ct.c_uint32)]


class NotifyStats(ct.Structure):
    _fields_ = [("writes", ct.c_uint64), ("reads", ct.c_uint64), ("injections", ct.c_uint64)]


class IrqKey(ct.Structure):
    _fields_ = [
        ("tgid", ct.c_uint32),
        ("gsi", ct.c_uint32),
        ("slot", ct.c_uint32),
        ("kind", ct.c_uint32),
        ("level", ct.c_uint32),
        ("pad", ct.c_uint32),
    ]


class WakeVal(ct.Structure):
    _fields_ = [
        ("wakeups", ct.c_uint64),
        ("polled", ct.c_uint64),
        ("waited", ct.c_uint64),
        ("invalid", ct.c_uint64),
        ("poll_ns", ct.c_uint64),
        ("wait_ns", ct.c_uint64),
        ("tgid", ct.c_uint32),
        ("pad", ct.c_uint32),
    ]


class VhostKey(ct.Structure):
    _fields_ = [("tid", ct.c_uint32), ("kind", ct.c_uint32), ("vq", ct.c_uint64)]


class VhostVal(ct.Structure):
    _fields_ = [("count", ct.c_uint64), ("tgid", ct.c_uint32), ("pad", ct.c_uint32)]


# map name → (key mirror, value mirror); sizes are asserted against bcc's types at load.
MAPS: dict[str, tuple[Any, Any]] = {
    "targets": (ct.c_uint32, ct.c_uint32),
    "thread_stats": (ct.c_uint32, ThreadStats),
    "thread_ts": (ct.c_uint32, ThreadTs),
    "runq_hist": (ct.c_uint32, Hist),
    "cpu_wait": (ct.c_uint32, CpuWait),
    "competitors": (CompKey, CompVal),
    "taps": (TapKey, ct.c_uint32),
    "tap_stats": (ct.c_uint32, TapStats),
    "skb_owner": (ct.c_uint32, SkbOwner),
    "drops": (DropKey, ct.c_uint64),
    "notify_fds": (FdKey, ct.c_uint32),
    "fd_direct": (ct.c_uint32, ct.c_uint32),
    "pending": (ct.c_uint32, Pending),
    "tap_dir": (ct.c_uint32, TapEnt),
    "tap_gen": (ct.c_uint32, ct.c_uint32),
    "dev_cache": (ct.c_uint32, DevEnt),
    "notify_stats": (ct.c_uint32, NotifyStats),
    "irqs": (IrqKey, ct.c_uint64),
    "wakes": (ct.c_uint32, WakeVal),
    "vhost_events": (VhostKey, VhostVal),
    "lost": (ct.c_uint32, ct.c_uint64),
    "tid_filter": (ct.c_uint32, IdEnt),
    "tgid_filter": (ct.c_uint32, IdEnt),
    "ifname_len_filter": (ct.c_uint32, ct.c_uint32),
}


def check_layouts(bpf: Any, names: list[str]) -> None:
    """Raise ProbeError when a map's key or value size differs from its mirror here."""
    for name in names:
        key_t, val_t = MAPS[name]
        table = bpf[name.encode()]
        leaf = getattr(table, "sLeaf", table.Leaf)  # per-CPU tables keep the one-CPU type in sLeaf
        for what, mine, theirs in (("key", key_t, table.Key), ("value", val_t, leaf)):
            if ct.sizeof(mine) != ct.sizeof(theirs):
                raise ProbeError(
                    f"map {name}: {what} is {ct.sizeof(theirs)} bytes in probes/vhtune.h but "
                    f"{ct.sizeof(mine)} in vhtune/probes/layouts.py",
                    hint="mirror the header change in layouts.py",
                )


def ifname_key(name: str) -> IfName:
    raw = name.encode()
    if not raw or len(raw) > 15:
        raise ProbeError(f"interface name {name!r} does not fit IFNAMSIZ", hint="use at most 15 characters")
    return IfName(raw)


def tap_key(name: str, inum: int) -> TapKey:
    return TapKey(bytes(ifname_key(name)), inum, 0)


def tap_name_words(name: str) -> tuple[int, int]:
    """The NUL-padded name as the two little-endian u64 words the net probe compares."""
    raw = bytes(ifname_key(name)).ljust(16, b"\0")  # validated, NUL-padded to IFNAMSIZ
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")


def tap_dir_index(name: str) -> int:
    """tap_dir index of ``name``: the same multiplicative hash as vht_tap_slot in probes/net.bpf.c."""
    w0, w1 = tap_name_words(name)
    return (((w0 ^ ((w1 * _TAP_K1) & _U64)) * _TAP_K2) & _U64) >> (64 - TAP_DIR_BITS)
