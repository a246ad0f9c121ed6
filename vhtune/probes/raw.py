"""The loaded probes without bcc in this process: maps and programs as plain fds, driven through libbpf's
low-level calls (ctypes), tracepoints attached with perf_event_open + PERF_EVENT_IOC_SET_BPF.

Why: bcc links LLVM; importing it and compiling costs the agent ~125 MB of RSS. ``vhtune.probes.child``
compiles in a short-lived process and hands the program and map fds over (SCM_RIGHTS); this module gives
them the small part of bcc's table interface that ``ProbeMaps`` uses (``t[key]``, ``t[key] = v``,
``del t[key]``, ``items_lookup_and_delete_batch``, ``Leaf``/``sLeaf``), with the key/value types of
vhtune/probes/layouts.py (their sizes were checked against bcc's in the child).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vhtune.errors import CapabilityError, ProbeError

TRACEFS = Path("/sys/kernel/tracing")
PERCPU_TYPES = {5, 6, 10}  # BPF_MAP_TYPE_PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
ARRAY_TYPES = {2, 6}  # BPF_MAP_TYPE_ARRAY, PERCPU_ARRAY (elements cannot be deleted)

# perf_event_open(2): struct perf_event_attr, the fields a tracepoint event needs (size 128 = VER8).
PERF_TYPE_TRACEPOINT = 2
PERF_SAMPLE_RAW = 1 << 10
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
PERF_FLAG_FD_CLOEXEC = 1 << 3
NR_PERF_EVENT_OPEN = 298  # x86_64


class PerfEventAttr(ct.Structure):
    _fields_ = [
        ("type", ct.c_uint32),
        ("size", ct.c_uint32),
        ("config", ct.c_uint64),
        ("sample_period", ct.c_uint64),
        ("sample_type", ct.c_uint64),
        ("read_format", ct.c_uint64),
        ("flags", ct.c_uint64),
        ("wakeup_events", ct.c_uint32),
        ("bp_type", ct.c_uint32),
        ("config1", ct.c_uint64),
        ("config2", ct.c_uint64),
        ("branch_sample_type", ct.c_uint64),
        ("sample_regs_user", ct.c_uint64),
        ("sample_stack_user", ct.c_uint32),
        ("clockid", ct.c_int32),
        ("sample_regs_intr", ct.c_uint64),
        ("aux_watermark", ct.c_uint32),
        ("sample_max_stack", ct.c_uint16),
        ("reserved2", ct.c_uint16),
        ("aux_sample_size", ct.c_uint32),
        ("reserved3", ct.c_uint32),
        ("sig_data", ct.c_uint64),
        ("config3", ct.c_uint64),
    ]


assert ct.sizeof(PerfEventAttr) == 136  # PERF_ATTR_SIZE_VER8


def _libbpf() -> Any:
    try:
        lib = ct.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        raise CapabilityError(f"libbpf is not loadable ({exc})", hint="install libbpf1 (`make setup`)") from None
    vp, u32p = ct.c_void_p, ct.POINTER(ct.c_uint32)
    for name, args in (
        ("bpf_map_lookup_elem", [ct.c_int, vp, vp]),
        ("bpf_map_update_elem", [ct.c_int, vp, vp, ct.c_uint64]),
        ("bpf_map_delete_elem", [ct.c_int, vp]),
        ("bpf_map_get_next_key", [ct.c_int, vp, vp]),
        ("bpf_map_lookup_and_delete_batch", [ct.c_int, vp, vp, vp, vp, u32p, vp]),
        ("bpf_raw_tracepoint_open", [ct.c_char_p, ct.c_int]),
    ):
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = ct.c_int
    return lib


_LIB: Any = None


def lib() -> Any:
    global _LIB
    if _LIB is None:
        _LIB = _libbpf()
    return _LIB


@dataclass(frozen=True)
class MapInfo:
    name: str
    fd: int
    map_type: int
    key_size: int
    value_size: int
    max_entries: int


class RawMap:
    """One BPF map by fd, with ctypes key/value types (per-CPU values as an array of ``ncpus``)."""

    def __init__(self, info: MapInfo, key_t: Any, val_t: Any, ncpus: int) -> None:
        self.info = info
        self.fd = info.fd
        self.Key = key_t
        self.sLeaf = val_t
        self.percpu = info.map_type in PERCPU_TYPES
        self.Leaf = val_t * ncpus if self.percpu else val_t
        if ct.sizeof(key_t) != info.key_size or ct.sizeof(val_t) != info.value_size:
            raise ProbeError(f"map {info.name}: handed-over sizes differ from layouts.py")

    def _key(self, key: Any) -> Any:
        return key if isinstance(key, self.Key) else self.Key(key)

    def __getitem__(self, key: Any) -> Any:
        k = self._key(key)
        v = self.Leaf()
        if lib().bpf_map_lookup_elem(self.fd, ct.byref(k), ct.byref(v)) != 0:
            raise KeyError(key)
        return v

    def __setitem__(self, key: Any, value: Any) -> None:
        k = self._key(key)
        if lib().bpf_map_update_elem(self.fd, ct.byref(k), ct.byref(value), 0) != 0:
            err = ct.get_errno()
            raise ProbeError(f"updating map {self.info.name} failed: {os.strerror(err)}")

    def __delitem__(self, key: Any) -> None:
        if self.info.map_type in ARRAY_TYPES:
            self[key] = self.Leaf()  # arrays cannot delete: zero instead (bcc does the same)
            return
        k = self._key(key)
        if lib().bpf_map_delete_elem(self.fd, ct.byref(k)) != 0:
            raise KeyError(key)

    def keys(self) -> Iterator[Any]:
        k, nk = self.Key(), self.Key()
        prev = None
        while lib().bpf_map_get_next_key(self.fd, prev, ct.byref(nk)) == 0:
            ct.memmove(ct.byref(k), ct.byref(nk), ct.sizeof(k))
            yield self.Key.from_buffer_copy(k)
            prev = ct.byref(k)

    def items(self) -> list[tuple[Any, Any]]:
        out = []
        for k in list(self.keys()):
            try:
                out.append((k, self[k]))
            except KeyError:
                continue
        return out

    def items_lookup_and_delete_batch(self) -> list[tuple[Any, Any]]:
        """Read and delete every element (BPF_MAP_LOOKUP_AND_DELETE_BATCH, Linux 5.6+)."""
        n = self.info.max_entries
        keys = (self.Key * n)()
        vals = (self.Leaf * n)()
        out_batch = ct.c_uint64(0)  # hash maps use a u32 bucket cursor; 8 bytes is room enough
        total = 0
        first = True
        while total < n:
            count = ct.c_uint32(n - total)
            rc = lib().bpf_map_lookup_and_delete_batch(
                self.fd,
                None if first else ct.byref(out_batch),
                ct.byref(out_batch),
                ct.byref(keys, ct.sizeof(self.Key) * total),
                ct.byref(vals, ct.sizeof(self.Leaf) * total),
                ct.byref(count),
                None,
            )
            err = ct.get_errno()
            total += count.value
            first = False
            if rc != 0:
                if err == errno.ENOENT:
                    break
                raise ProbeError(f"reading map {self.info.name} failed: {os.strerror(err)}")
            if count.value == 0:
                break
        return [(keys[i], vals[i]) for i in range(total)]


def tracepoint_id(tp: str) -> int:
    cat, name = tp.split(":", 1)
    try:
        return int((TRACEFS / "events" / cat / name / "id").read_text())
    except OSError as exc:
        raise ProbeError(f"tracepoint {tp} has no id in tracefs ({exc.strerror})") from None


def attach_tracepoint(prog_fd: int, tp: str) -> int:
    """One perf event for ``tp`` carrying ``prog_fd``; closing the returned fd detaches it."""
    attr = PerfEventAttr(
        type=PERF_TYPE_TRACEPOINT,
        size=ct.sizeof(PerfEventAttr),
        config=tracepoint_id(tp),
        sample_period=1,
        sample_type=PERF_SAMPLE_RAW,
        wakeup_events=1,
    )
    libc = ct.CDLL(None, use_errno=True)
    # A tracepoint event with pid -1 on CPU 0 runs its BPF program for hits on every CPU.
    fd = libc.syscall(NR_PERF_EVENT_OPEN, ct.byref(attr), -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        raise ProbeError(f"perf_event_open for {tp} failed: {os.strerror(ct.get_errno())}")
    import fcntl

    try:
        fcntl.ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError as exc:
        os.close(fd)
        raise ProbeError(f"attaching a program to {tp} failed: {exc.strerror}") from None
    return fd


def attach_raw_tracepoint(prog_fd: int, name: str) -> int:
    """BPF_RAW_TRACEPOINT_OPEN: ``prog_fd`` on the raw tracepoint ``name`` (e.g. kfree_skb); closing the
    returned fd detaches it."""
    fd = int(lib().bpf_raw_tracepoint_open(name.encode(), prog_fd))
    if fd < 0:
        raise ProbeError(f"attaching a program to raw tracepoint {name} failed: {os.strerror(-fd or ct.get_errno())}")
    return fd


class _Func:
    def __init__(self, fd: int) -> None:
        self.fd = fd


class RawModule:
    """Stands in for ``bcc.BPF`` after the hand-over: ``m[b"name"]`` maps, ``funcs``, tracepoint attach."""

    def __init__(self, maps: dict[str, RawMap], progs: dict[str, int]) -> None:
        self.maps = maps
        self.funcs = {name.encode(): _Func(fd) for name, fd in progs.items()}
        self.progs = progs
        self.links: dict[str, int] = {}  # "cat:name" → perf event fd
        self.net_offsets: dict[str, int] = {}  # what the compile child chose for the net family (loader.py)
        self.net_note = ""

    def __getitem__(self, name: bytes) -> RawMap:
        return self.maps[name.decode()]

    def attach_tracepoint(self, tp: bytes, fn_name: bytes) -> None:
        key = tp.decode()
        if key in self.links:
            return
        self.links[key] = attach_tracepoint(self.progs[fn_name.decode()], key)

    def detach_tracepoint(self, tp: bytes) -> None:
        fd = self.links.pop(tp.decode(), None)
        if fd is not None:
            os.close(fd)

    def attach_raw_tracepoint(self, tp: bytes, fn_name: bytes) -> None:
        key = "raw:" + tp.decode()
        if key in self.links:
            return
        self.links[key] = attach_raw_tracepoint(self.progs[fn_name.decode()], tp.decode())

    def detach_raw_tracepoint(self, tp: bytes) -> None:
        fd = self.links.pop("raw:" + tp.decode(), None)
        if fd is not None:
            os.close(fd)

    def cleanup(self) -> None:
        for fd in self.links.values():
            os.close(fd)
        self.links.clear()
        for fd in [*self.progs.values(), *(m.fd for m in self.maps.values())]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.progs.clear()
        self.maps.clear()
