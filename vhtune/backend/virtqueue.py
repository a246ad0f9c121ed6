"""Split virtqueue (virtio 1.x §2.7): descriptor table, avail ring, used ring, notification suppression.

Layouts: desc 16 B ``u64 addr, u32 len, u16 flags, u16 next``; avail ``u16 flags, u16 idx, u16 ring[num],
u16 used_event``; used ``u16 flags, u16 idx, {u32 id, u32 len}[num], u16 avail_event``. Indices are
free-running u16; slot = idx & (num - 1) since num is a power of two.

Every descriptor is read from shared memory exactly once and only the copy is used (the driver may rewrite
the table while we look at it). Ordering relies on x86 TSO: numpy stores to the used ring are issued in
program order, so used entries are visible before used.idx; the store→load fences needed before reading
used_event / avail.idx after publishing are made with a locked instruction (see :func:`full_barrier`).
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass

import numpy as np

from vhtune.backend.memory import GuestMemory, Region
from vhtune.errors import GuestMemoryError, ProtocolError

DESC = struct.Struct("<QIHH")
assert DESC.size == 16
DESC_DTYPE = np.dtype([("addr", "<u8"), ("len", "<u4"), ("flags", "<u2"), ("next", "<u2")])
USED_DTYPE = np.dtype([("id", "<u4"), ("len", "<u4")])
assert DESC_DTYPE.itemsize == 16 and USED_DTYPE.itemsize == 8

F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4
AVAIL_F_NO_INTERRUPT = 1
USED_F_NO_NOTIFY = 1
MAX_QUEUE_SIZE = 32768
# Longest indirect table accepted (entries); Linux uses at most MAX_SKB_FRAGS + 2.
MAX_INDIRECT = 1024

_fence_lock = threading.Lock()


def full_barrier() -> None:
    """A store→load fence: CPython's lock acquire is a locked read-modify-write, a full barrier on x86."""
    with _fence_lock:
        pass


def need_event(event: int, new: int, old: int) -> bool:
    """virtio EVENT_IDX rule: notify iff ``(u16)(new - event - 1) < (u16)(new - old)``."""
    return ((new - event - 1) & 0xFFFF) < ((new - old) & 0xFFFF)


@dataclass(frozen=True)
class Seg:
    region: Region
    off: int
    len: int

    def view(self) -> np.ndarray:
        return self.region.arr[self.off : self.off + self.len]


class Virtqueue:
    """One queue's ring state. Ring views exist only between :meth:`attach` and :meth:`detach`."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = f"vq{index}"
        self.num = 0
        self.addrs: tuple[int, int, int] | None = None  # desc, avail, used (front-end virtual)
        self.last_avail = 0
        self.used_idx = 0
        self.kick_fd: int | None = None
        self.call_fd: int | None = None
        self.err_fd: int | None = None
        self.call_lock = threading.Lock()
        self.kick_polling = False  # SET_VRING_KICK with the no-fd bit: the worker polls avail.idx
        self.enabled = False
        self.event_idx = False
        self.indirect = False
        self.mem: GuestMemory | None = None
        self.broken: str | None = None
        self._views = False

    # --- set-up -------------------------------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        return self._views

    def attach(self, mem: GuestMemory) -> None:
        """Translate the ring addresses and build views; raises GuestMemoryError naming the ring part."""
        assert self.addrs is not None and self.num
        d, a, u = self.addrs
        n = self.num
        req = "SET_VRING_ADDR"
        for name, addr, align in (("desc", d, 16), ("avail", a, 2), ("used", u, 4)):
            if addr % align:
                raise ProtocolError(f"{addr:#x} not {align}-byte aligned", req, f"vq{self.index}.{name}")
        rd, od = mem.uva(d, 16 * n, req)
        ra, oa = mem.uva(a, 6 + 2 * n, req)
        ru, ou = mem.uva(u, 6 + 8 * n, req)
        self.mem = mem
        self.desc = rd.arr[od : od + 16 * n].view(DESC_DTYPE)
        self.desc_mv = memoryview(rd.arr[od : od + 16 * n])  # type: ignore[arg-type]
        av = ra.arr[oa : oa + 6 + 2 * n].view("<u2")
        self.avail_flags = av[0:1]
        self.avail_idx = av[1:2]
        self.avail_ring = av[2 : 2 + n]
        self.used_event = av[2 + n : 3 + n]
        self.used_hdr = ru.arr[ou : ou + 4].view("<u2")
        self.used_ring = ru.arr[ou + 4 : ou + 4 + 8 * n].view(USED_DTYPE)
        # {u32 id, u32 len} little-endian as one u64: id in the low half. used is 4-aligned, not 8: numpy
        # copes with the unaligned view; x86 stores never tear within a naturally aligned u32.
        self.used_u64 = ru.arr[ou + 4 : ou + 4 + 8 * n].view("<u8")
        self.avail_event = ru.arr[ou + 4 + 8 * n : ou + 6 + 8 * n].view("<u2")
        self._views = True

    def detach(self) -> None:
        """Drop every view into guest memory so the regions can be unmapped."""
        for name in ("desc", "desc_mv", "avail_flags", "avail_idx", "avail_ring", "used_event", "used_hdr"):
            self.__dict__.pop(name, None)
        for name in ("used_ring", "used_u64", "avail_event"):
            self.__dict__.pop(name, None)
        self._views = False
        self.mem = None

    # --- avail side ---------------------------------------------------------------------------------------
    def pending(self) -> int:
        """New avail entries; a jump of more than num means a corrupt driver and breaks the queue."""
        n = (int(self.avail_idx[0]) - self.last_avail) & 0xFFFF
        if n > self.num:
            raise ProtocolError(
                f"avail.idx moved {n} entries past {self.last_avail}, the ring holds {self.num}",
                self.name,
                "avail.idx",
            )
        return n

    def pop(self, n: int) -> np.ndarray:
        """Take n heads (a copy) from the avail ring, advancing last_avail."""
        heads = self.peek(n)
        self.last_avail = (self.last_avail + n) & 0xFFFF
        return heads

    def peek(self, n: int) -> np.ndarray:
        """The next n heads (a copy) without consuming them. A run that crosses the ring's end is two
        slices, not a fancy index (≈ 10x cheaper)."""
        num = self.num
        s = self.last_avail & (num - 1)
        if s + n <= num:
            return self.avail_ring[s : s + n].copy()
        return np.concatenate((self.avail_ring[s:num], self.avail_ring[: s + n - num]))

    def descs(self, heads: np.ndarray) -> np.ndarray:
        """Copy of the head descriptors (heads must be < num)."""
        return self.desc[heads]

    def walk(self, head: int, writable: bool, max_bytes: int) -> list[Seg]:
        """Resolve one chain into guest-memory segments, checking everything the spec lets a driver break."""
        mem = self.mem
        assert mem is not None
        n = self.num
        where = f"{self.name}.desc[{head}]"
        if head >= n:
            raise ProtocolError(f"head {head} outside the table of {n}", where, "head")
        segs: list[Seg] = []
        total = 0
        table: bytes | memoryview = self.desc_mv
        limit = n
        i = head
        seen = 0
        indirect = False
        while True:
            addr, ln, flags, nxt = DESC.unpack_from(table, 16 * i)
            seen += 1
            if flags & F_INDIRECT:
                if indirect:
                    raise ProtocolError("nested INDIRECT descriptor", where, "flags")
                if not self.indirect:
                    raise ProtocolError("INDIRECT used but not negotiated", where, "flags")
                if flags & F_NEXT:
                    raise ProtocolError("INDIRECT together with NEXT", where, "flags")
                if ln == 0 or ln % 16:
                    raise ProtocolError(f"indirect table length {ln} not a non-zero multiple of 16", where, "len")
                if ln // 16 > MAX_INDIRECT:
                    raise ProtocolError(f"indirect table of {ln // 16} entries (max {MAX_INDIRECT})", where, "len")
                table = mem.read(addr, ln, where)  # copied once: the walk below uses only this copy
                limit = ln // 16
                indirect = True
                i = 0
                seen = 0
                continue
            if ln == 0:
                raise ProtocolError("zero-length descriptor", where, "len")
            if bool(flags & F_WRITE) != writable:
                kind = "write-only descriptor in a TX chain" if not writable else "read-only descriptor in RX"
                raise ProtocolError(kind, where, "flags")
            total += ln
            if total > max_bytes:
                raise ProtocolError(f"chain carries more than {max_bytes} bytes", where, "len")
            try:
                r, off = mem.gpa(addr, ln, where)
            except GuestMemoryError:
                raise
            segs.append(Seg(r, off, ln))
            if not flags & F_NEXT:
                return segs
            if nxt >= limit:
                raise ProtocolError(f"next {nxt} outside the table of {limit}", where, "next")
            if seen >= limit:
                raise ProtocolError(f"chain longer than {limit} descriptors (loop?)", where, "next")
            i = nxt

    # --- used side ----------------------------------------------------------------------------------------
    def _put_used(self, vals: np.ndarray) -> None:
        """Store used entries as u64 (id low half, len high half) from used_idx on, then publish used.idx.
        A run that crosses the ring's end is two slice stores."""
        k, num = len(vals), self.num
        s = self.used_idx & (num - 1)
        first = min(k, num - s)
        self.used_u64[s : s + first] = vals[:first]
        if first < k:
            self.used_u64[: k - first] = vals[first:]
        self.used_idx = (self.used_idx + k) & 0xFFFF
        self.used_hdr[1] = self.used_idx  # after the entries (x86 TSO keeps the store order)

    def push(self, ids: np.ndarray, lens: np.ndarray) -> None:
        if len(ids):
            self._put_used(ids.astype(np.uint64) | (lens.astype(np.uint64) << np.uint64(32)))

    def push_const(self, ids: np.ndarray, ln: int) -> None:
        """Used entries that all carry the same len."""
        self._put_used(ids.astype(np.uint64) | np.uint64(ln << 32))

    def push_zero(self, ids: np.ndarray) -> None:
        """Used entries with len 0 (TX: the device wrote nothing)."""
        self._put_used(ids)

    def push_one(self, head: int, ln: int) -> None:
        slot = self.used_idx & (self.num - 1)
        self.used_ring[slot] = (head, ln)
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.used_hdr[1] = self.used_idx

    def should_call(self, old_used: int, suppression: bool) -> bool:
        if not suppression:
            return old_used != self.used_idx
        full_barrier()
        if self.event_idx:
            return need_event(int(self.used_event[0]), self.used_idx, old_used)
        return old_used != self.used_idx and not int(self.avail_flags[0]) & AVAIL_F_NO_INTERRUPT

    def call(self) -> bool:
        # Under call_lock: QEMU swaps call fds on a running ring (masking), and a closed fd number can be
        # reused at once by the next SCM_RIGHTS fd — a stale write would land in some other file.
        with self.call_lock:
            fd = self.call_fd
            if fd is None:
                return False
            try:
                os.eventfd_write(fd, 1)
            except OSError:
                return False
        return True

    # --- kick side ----------------------------------------------------------------------------------------
    def kicks_off(self) -> None:
        """Ask the driver not to kick while we are polling."""
        if not self.event_idx:
            self.used_hdr[0] = USED_F_NO_NOTIFY

    def kicks_on(self, seen: int | None = None) -> bool:
        """Ask for a kick on the next buffer past avail index ``seen`` (default: last_avail, everything taken);
        returns True if work arrived meanwhile (then don't sleep)."""
        mark = self.last_avail if seen is None else seen
        if self.event_idx:
            self.avail_event[0] = mark
        else:
            self.used_hdr[0] = 0
        full_barrier()
        return int(self.avail_idx[0]) != mark
