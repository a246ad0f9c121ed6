"""The data path driven directly (no threads): a memfd ring with plain descriptors, QueuePath.tx_step."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.backend.conftest import eventfd_count
from vhtune.backend import net
from vhtune.backend.datapath import PortIO, QueuePath
from vhtune.backend.privring import private_ring
from vhtune.backend.stats import QueueStats, Tunables
from vhtune.backend.virtqueue import Virtqueue

NUM = 64


@pytest.fixture
def ring() -> Iterator[tuple[Virtqueue, QueuePath, int]]:
    call = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        with private_ring(NUM, net.rx_header(0) + net.make_frame(64)) as vq:
            vq.call_fd = call
            yield vq, QueuePath(vq, QueueStats(), Tunables(), PortIO("sink"), net.HDR_LEN, True), call
    finally:
        os.close(call)


@pytest.mark.parametrize("coalesce", [1, 4])
def test_call_coalescing(ring, coalesce: int) -> None:  # type: ignore[no-untyped-def]
    vq, path, call = ring
    path.tun.set(suppression=False, call_coalesce=coalesce)
    for _ in range(8):
        vq.avail_idx[0] = (vq.last_avail + 4) & 0xFFFF
        assert path.tx_step(32) == 4
    assert eventfd_count(call) == 8 // coalesce
    assert path.stats.calls == 8 // coalesce and path.stats.bursts == 8
    assert path.stats.hist[2] == 8  # bursts of 4


def test_burst_limit_and_histogram(ring) -> None:  # type: ignore[no-untyped-def]
    vq, path, _ = ring
    vq.avail_idx[0] = 40
    assert path.tx_step(16) == 16 and path.tx_step(16) == 16 and path.tx_step(16) == 8
    assert path.stats.packets == 40 and path.stats.bytes == 40 * 64
    assert path.stats.hist[4] == 2 and path.stats.hist[3] == 1
    assert int(vq.used_hdr[1]) == 40


def test_used_entries_after_wrap_of_the_ring(ring) -> None:  # type: ignore[no-untyped-def]
    """Bursts that straddle the end of the ring (slot num-1 → 0) write every used slot once."""
    vq, path, _ = ring
    for _ in range(5):
        vq.avail_idx[0] = (vq.last_avail + 30) & 0xFFFF
        assert path.tx_step(64) == 30
    ids = [int(x) for x in vq.used_ring["id"]]
    # Avail slot i always holds head i, so after 150 entries every used slot s must hold head s.
    assert ids == list(range(NUM))
    assert int(vq.used_hdr[1]) == 150


@pytest.mark.parametrize(("num", "frame_len"), [(0, 64), (257, 64), (64, 129)])
def test_private_ring_refuses_a_layout_that_overlaps(num: int, frame_len: int) -> None:
    # 257 descriptors (16 bytes each) would run into the avail ring at +0x1000; a 129-byte frame into the next.
    with pytest.raises(ValueError, match="do not fit"), private_ring(num, bytes(frame_len)):
        pass
