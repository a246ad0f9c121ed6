"""A split virtqueue in private memory, every descriptor already holding one frame.

It drives the data path (QueuePath.tx_step) without a front-end: benchmarks of the port's own cost and
unit tests of batching and call coalescing. The layout is the one a driver sets up (virtio 1.x 2.7): a
16-byte descriptor table at the start of the region, the available ring at +0x1000 (flags, idx, ring[num]),
the used ring at +0x2000, and frame buffers from +0x10000, 128 bytes apart. Every avail slot i names
descriptor i, so a caller makes n buffers available by adding n to avail idx (mod 2^16).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from vhtune.backend.memory import GuestMemory, RegionDesc
from vhtune.backend.virtqueue import Virtqueue

UVA = 0x7F0000000000  # the front-end's address of the region (any page-aligned value)
_DESC_SIZE = 16
_AVAIL, _USED, _BUFFERS, _BUF_STRIDE = 0x1000, 0x2000, 0x10000, 128


@contextmanager
def private_ring(num: int, frame: bytes, size: int = 1 << 20) -> Iterator[Virtqueue]:
    """A TX virtqueue (index 1) of ``num`` descriptors over a memfd, each pointing at a copy of ``frame``
    (virtio-net header included); unmapped on exit. No view of the memory may outlive the block."""
    if not 0 < num <= _AVAIL // _DESC_SIZE or len(frame) > _BUF_STRIDE or _BUFFERS + num * _BUF_STRIDE > size:
        raise ValueError(f"{num} frames of {len(frame)} bytes do not fit this layout in {size} bytes")
    fd = os.memfd_create("vhtune-private-ring")
    try:
        os.ftruncate(fd, size)
        mem = GuestMemory.map([RegionDesc(0, size, UVA, 0)], [fd])
    finally:
        os.close(fd)
    vq = Virtqueue(1)
    try:
        vq.num, vq.addrs = num, (UVA, UVA + _AVAIL, UVA + _USED)
        vq.attach(mem)
        arr = mem.regions[0].arr
        data = np.frombuffer(frame, dtype=np.uint8)
        for i in range(num):
            addr = _BUFFERS + _BUF_STRIDE * i
            # struct virtq_desc: le64 addr, le32 len, le16 flags (0: device-readable, no next), le16 next
            struct.pack_into("<QIHH", arr.data, _DESC_SIZE * i, addr, len(frame), 0, 0)
            arr[addr : addr + len(frame)] = data
            struct.pack_into("<H", arr.data, _AVAIL + 4 + 2 * i, i)  # avail ring[i] = descriptor i
        del arr, data
        yield vq
    finally:
        vq.detach()
        mem.close()
