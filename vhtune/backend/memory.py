"""Guest memory: mmap of each SET_MEM_TABLE region fd, address translation with bounds checks.

Per vhost-user.rst, a region is ``guest_phys_addr, memory_size, userspace_addr, mmap_offset`` plus one fd:
the region's bytes are at ``mmap_offset`` in that fd. Descriptor addresses are guest-physical (translate via
guest_phys_addr); SET_VRING_ADDR ring addresses are front-end virtual (translate via userspace_addr). An
access must lie inside one region: the back-end never reads across a region boundary.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
from dataclasses import dataclass, field

import numpy as np

from vhtune.backend.messages import MAX_REGIONS, MEM_REGION, MEM_TABLE_HEAD
from vhtune.errors import GuestMemoryError, ProtocolError

log = logging.getLogger("vhtune.backend")
_EMPTY = np.empty(0, dtype=np.int64)
_MIN, _MAX = np.minimum.reduce, np.maximum.reduce
U64_MAX = (1 << 64) - 1
REQ = "SET_MEM_TABLE"


@dataclass(frozen=True)
class RegionDesc:
    gpa: int
    size: int
    uva: int
    mmap_offset: int


def parse_mem_table(payload: bytes, nfds: int) -> list[RegionDesc]:
    """Decode and sanity-check a SET_MEM_TABLE payload (no fd is touched here)."""
    if len(payload) < MEM_TABLE_HEAD.size:
        raise ProtocolError("payload shorter than the 8-byte region count", REQ, "nregions")
    nregions, _pad = MEM_TABLE_HEAD.unpack_from(payload)
    if nregions == 0 or nregions > MAX_REGIONS:
        raise ProtocolError(f"nregions {nregions} not in 1..{MAX_REGIONS}", REQ, "nregions")
    want = MEM_TABLE_HEAD.size + nregions * MEM_REGION.size
    if len(payload) != want:
        raise ProtocolError(f"payload {len(payload)} bytes, {nregions} regions need {want}", REQ, "size")
    if nfds != nregions:
        raise ProtocolError(f"{nfds} fds for {nregions} regions", REQ, "fds")
    regions = []
    for i in range(nregions):
        gpa, size, uva, off = MEM_REGION.unpack_from(payload, MEM_TABLE_HEAD.size + i * MEM_REGION.size)
        f = f"regions[{i}]"
        if size == 0:
            raise ProtocolError("memory_size is 0", REQ, f"{f}.memory_size")
        for name, base in (("guest_phys_addr", gpa), ("userspace_addr", uva), ("mmap_offset", off)):
            if base + size - 1 > U64_MAX:
                raise ProtocolError(f"{name} + memory_size wraps past 2^64", REQ, f"{f}.{name}")
        regions.append(RegionDesc(gpa, size, uva, off))
    for key in ("gpa", "uva"):
        spans = sorted((getattr(r, key), getattr(r, key) + r.size) for r in regions)
        for (_a0, a1), (b0, _b1) in itertools.pairwise(spans):
            if b0 < a1:
                name = "guest_phys_addr" if key == "gpa" else "userspace_addr"
                raise ProtocolError(f"regions overlap at {b0:#x}", REQ, f"regions.{name}")
    return regions


@dataclass
class Region:
    desc: RegionDesc
    mm: mmap.mmap
    arr: np.ndarray = field(repr=False)  # uint8 view of the region's bytes (starting at mmap_offset)


class GuestMemory:
    """All mapped regions of one connection. Build with :meth:`map`, release with :meth:`close`."""

    def __init__(self, regions: list[Region]) -> None:
        self.regions = sorted(regions, key=lambda r: r.desc.gpa)
        self._gpa_starts = np.array([r.desc.gpa for r in self.regions], dtype=np.uint64)
        self._gpa_ends = np.array([r.desc.gpa + r.desc.size for r in self.regions], dtype=np.uint64)

    @classmethod
    def map(cls, descs: list[RegionDesc], fds: list[int]) -> GuestMemory:
        """mmap each region; the caller still owns (and closes) the fds — a mapping outlives its fd."""
        regions: list[Region] = []
        try:
            for i, (d, fd) in enumerate(zip(descs, fds, strict=True)):
                try:
                    st = os.fstat(fd)
                except OSError as e:
                    raise ProtocolError(f"fd unusable: {e.strerror}", REQ, f"regions[{i}].fd") from None
                end = d.mmap_offset + d.size
                if end > st.st_size:
                    raise ProtocolError(
                        f"mmap_offset + memory_size = {end:#x} beyond the fd's size {st.st_size:#x}",
                        REQ,
                        f"regions[{i}].mmap_offset",
                    )
                # hugetlbfs needs a length aligned to its page size, which st_blksize reports.
                blk = max(st.st_blksize, mmap.PAGESIZE)
                length = min(-(-end // blk) * blk, st.st_size)
                try:
                    mm = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                except (OSError, ValueError, OverflowError) as e:
                    raise ProtocolError(f"mmap failed: {e}", REQ, f"regions[{i}].fd") from None
                whole = np.frombuffer(mm, dtype=np.uint8)
                regions.append(Region(d, mm, whole[d.mmap_offset : end]))
                del whole
        except BaseException:
            GuestMemory(regions).close()
            raise
        return cls(regions)

    def close(self) -> None:
        regions, self.regions = self.regions, []
        for r in regions:
            r.arr = np.empty(0, dtype=np.uint8)
            try:
                r.mm.close()
            except BufferError:
                # A view still alive somewhere keeps the mapping (and mmap's dup of the fd) until collected.
                log.warning("guest memory region %#x still referenced at unmap", r.desc.gpa)

    def _find(self, addr: int, length: int, key: str, what: str) -> tuple[Region, int]:
        if length < 0:
            raise GuestMemoryError(f"negative length {length}", what, "len")
        for r in self.regions:
            base = r.desc.gpa if key == "gpa" else r.desc.uva
            if base <= addr < base + r.desc.size:
                off = addr - base
                if off + length > r.desc.size:
                    raise GuestMemoryError(
                        f"{addr:#x}+{length} crosses the end of the region at {base + r.desc.size:#x}",
                        what,
                        "addr",
                    )
                return r, off
        raise GuestMemoryError(f"address {addr:#x} is not in any mapped region", what, "addr")

    def gpa(self, addr: int, length: int, what: str = "descriptor") -> tuple[Region, int]:
        return self._find(addr, length, "gpa", what)

    def uva(self, addr: int, length: int, what: str = "ring") -> tuple[Region, int]:
        return self._find(addr, length, "uva", what)

    def view(self, addr: int, length: int, what: str = "descriptor") -> np.ndarray:
        r, off = self.gpa(addr, length, what)
        return r.arr[off : off + length]

    def read(self, addr: int, length: int, what: str = "descriptor") -> bytes:
        return self.view(addr, length, what).tobytes()

    def span(
        self, addrs: np.ndarray, lens: np.ndarray, min_len: int, max_len: int, want_offsets: bool = True
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Burst check: every (addr, len) inside the one region holding the lowest addr, min_len <= len <= max_len.

        A sufficient test from two or three reductions; None means "use the exact per-descriptor path", not
        "invalid". Returns the region's bytes and int64 offsets (empty if not wanted).
        """
        # ufunc.reduce directly (the ndarray.min/max wrappers cost ~1 µs each per burst), and unsigned
        # wrap-around to get both bounds from one max: len < min_len wraps to a huge len - min_len, and
        # addr < start wraps to a huge addr - start.
        if len(lens) == 0 or not self.regions:
            return None
        over = int(_MAX(lens - np.uint32(min_len)))
        if over > max_len - min_len:
            return None
        hi_len = over + min_len
        if len(self.regions) == 1:
            r = self.regions[0]
        else:
            lo = int(_MIN(addrs))
            for r in self.regions:
                if r.desc.gpa <= lo < r.desc.gpa + r.desc.size:
                    break
            else:
                return None
        rel = addrs - np.uint64(r.desc.gpa)
        if int(_MAX(rel)) + hi_len > r.desc.size:
            return None
        return r.arr, (rel.astype(np.int64) if want_offsets else _EMPTY)

    def locate(self, addrs: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorized: region index, offset and an ok mask for each (guest-physical addr, len) pair."""
        a = addrs.astype(np.uint64, copy=False)
        idx = np.searchsorted(self._gpa_starts, a, side="right").astype(np.int64) - 1
        ok = idx >= 0
        idx_c = np.where(ok, idx, 0)
        if len(self.regions) == 0:
            return idx_c, np.zeros_like(a), np.zeros(len(a), dtype=bool)
        starts = self._gpa_starts[idx_c]
        ends = self._gpa_ends[idx_c]
        ln = lens.astype(np.uint64, copy=False)
        # addr < end and len <= end - addr: no wrap since both sides stay below 2^64.
        ok &= (a >= starts) & (a < ends) & (ln <= ends - np.minimum(a, ends))
        return idx_c, (a - starts), ok
