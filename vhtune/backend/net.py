"""virtio-net facts the back-end needs: feature bits, the 12-byte virtio_net_hdr, frames.

With VIRTIO_F_VERSION_1 (or MRG_RXBUF) every buffer starts with the 12-byte header
``u8 flags, u8 gso_type, u16 hdr_len, u16 gso_size, u16 csum_start, u16 csum_offset, u16 num_buffers``
(virtio 1.x §5.1.6). Queue 2k is RX (device writes), 2k+1 is TX (device reads).
"""

from __future__ import annotations

import struct

from vhtune.errors import ProtocolError

# Device feature bits.
VIRTIO_NET_F_CSUM = 0
VIRTIO_NET_F_MRG_RXBUF = 15
VIRTIO_NET_F_MQ = 22
VIRTIO_RING_F_INDIRECT_DESC = 28
VIRTIO_RING_F_EVENT_IDX = 29
VHOST_USER_F_PROTOCOL_FEATURES = 30
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_IOMMU_PLATFORM = 33  # never offered: addresses would be IOVAs needing IOTLB messages

# Protocol feature bits (vhost-user.rst).
PROTO_MQ = 0
PROTO_LOG_SHMFD = 1
PROTO_REPLY_ACK = 3
PROTO_MTU = 4
PROTO_STATUS = 16


def bits(*nums: int) -> int:
    v = 0
    for n in nums:
        v |= 1 << n
    return v


def offered_features(event_idx: bool) -> int:
    f = bits(
        VIRTIO_F_VERSION_1,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_MQ,
        VIRTIO_RING_F_INDIRECT_DESC,
        VHOST_USER_F_PROTOCOL_FEATURES,
    )
    return f | (bits(VIRTIO_RING_F_EVENT_IDX) if event_idx else 0)


OFFERED_PROTOCOL = bits(PROTO_MQ, PROTO_REPLY_ACK, PROTO_MTU, PROTO_STATUS)

HDR = struct.Struct("<BBHHHHH")
HDR_LEN = 12
assert HDR.size == HDR_LEN
HDR_F_NEEDS_CSUM = 1
GSO_NONE = 0
# The largest frame a chain may carry: 64 KiB plus the header (checklist item 26).
MAX_CHAIN_BYTES = 65536 + HDR_LEN
ETH_HLEN = 14


def check_tx_header(hdr: bytes, pkt_len: int, where: str) -> None:
    """No offloads are offered, so a TX header must ask for none; anything else is refused, not trusted."""
    flags, gso_type = hdr[0], hdr[1]
    if gso_type != GSO_NONE:
        raise ProtocolError(f"gso_type {gso_type} but no GSO feature was negotiated", where, "gso_type")
    if flags & HDR_F_NEEDS_CSUM:
        raise ProtocolError("NEEDS_CSUM but VIRTIO_NET_F_CSUM was not negotiated", where, "flags")
    if flags & ~0x7:
        raise ProtocolError(f"unknown header flags {flags:#x}", where, "flags")
    # csum_start/csum_offset only mean something with NEEDS_CSUM (refused above); the tap always gets a
    # zeroed header from us, so stale values with flags 0 are harmless and ignored.


def rx_header(num_buffers: int) -> bytes:
    return HDR.pack(0, GSO_NONE, 0, 0, 0, 0, num_buffers)


def swap_macs(frame: bytes | bytearray | memoryview) -> bytes:
    b = bytes(frame)
    if len(b) < 12:
        return b
    return b[6:12] + b[0:6] + b[12:]


def make_frame(size: int, seq: int = 0) -> bytes:
    """A broadcast-free test frame: locally administered MACs, ethertype 0x88b5 (local experimental)."""
    size = max(size, ETH_HLEN)
    head = bytes.fromhex("02000000000202000000000188b5")
    body = (seq.to_bytes(4, "big") * (size // 4 + 1))[: size - ETH_HLEN]
    return head + body
