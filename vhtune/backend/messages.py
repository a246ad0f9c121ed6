"""vhost-user wire messages: one table of request id → payload layout, fd count and reply rule.

Facts from QEMU docs/interop/vhost-user.rst: a 12-byte header ``u32 request, u32 flags, u32 size`` then
``size`` payload bytes, all little-endian; fds travel as SCM_RIGHTS on the same sendmsg. flags bits 0-1 are the
version (1), bit 2 REPLY, bit 3 NEED_REPLY. A reply repeats the request id with flags = version | REPLY.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from vhtune.errors import ProtocolError

HEADER = struct.Struct("<III")
assert HEADER.size == 12

VERSION = 0x1
FLAG_VERSION_MASK = 0x3
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8

# Up to 8 regions in SET_MEM_TABLE without CONFIGURE_MEM_SLOTS (which vhtune does not offer).
MAX_REGIONS = 8
# SCM_RIGHTS fds accepted per message: the largest legal count is one per SET_MEM_TABLE region.
MAX_FDS = MAX_REGIONS


class Req(enum.IntEnum):
    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_BACKEND_REQ_FD = 21
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    CREATE_CRYPTO_SESSION = 26
    CLOSE_CRYPTO_SESSION = 27
    POSTCOPY_ADVISE = 28
    POSTCOPY_LISTEN = 29
    POSTCOPY_END = 30
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    GPU_SET_SOCKET = 33
    RESET_DEVICE = 34
    VRING_KICK = 35
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40


def req_name(request: int) -> str:
    try:
        return Req(request).name
    except ValueError:
        return f"request {request}"


# Payload layouts.
U64 = struct.Struct("<Q")
VRING_STATE = struct.Struct("<II")  # index, num
VRING_ADDR = struct.Struct("<IIQQQQ")  # index, flags, desc, used, avail, log
MEM_TABLE_HEAD = struct.Struct("<II")  # nregions, padding
MEM_REGION = struct.Struct("<QQQQ")  # guest_phys_addr, memory_size, userspace_addr, mmap_offset
LOG_BASE = struct.Struct("<QQ")  # mmap_size, mmap_offset
assert (U64.size, VRING_STATE.size, VRING_ADDR.size) == (8, 8, 40)
assert (MEM_TABLE_HEAD.size, MEM_REGION.size, LOG_BASE.size) == (8, 32, 16)

MEM_TABLE_MAX = MEM_TABLE_HEAD.size + MAX_REGIONS * MEM_REGION.size

# SET_VRING_KICK/CALL/ERR u64: bits 0-7 queue index, bit 8 set = no fd (polling).
VRING_IDX_MASK = 0xFF
VRING_NOFD_MASK = 0x100


class Reply(enum.Enum):
    NONE = "none"  # only an ack when REPLY_ACK is negotiated and NEED_REPLY is set
    ALWAYS = "always"  # the request's own reply (GET_*); NEED_REPLY adds nothing


@dataclass(frozen=True)
class Spec:
    """How one request looks on the wire: exact or bounded payload size, fds, reply rule."""

    size: int  # exact payload size; -1 = variable (see max_size)
    max_size: int
    fds: tuple[int, int]  # (min, max) fds
    reply: Reply

    def check(self, request: int, size: int) -> None:
        name = req_name(request)
        if self.size >= 0 and size != self.size:
            raise ProtocolError(f"payload is {size} bytes, the request takes {self.size}", name, "size")
        if size > self.max_size:
            raise ProtocolError(f"payload is {size} bytes, at most {self.max_size} allowed", name, "size")


def _fixed(size: int, fds: tuple[int, int] = (0, 0), reply: Reply = Reply.NONE) -> Spec:
    return Spec(size, size, fds, reply)


# The table: every request the back-end understands. Absent ids are refused as unsupported.
SPECS: dict[Req, Spec] = {
    Req.GET_FEATURES: _fixed(0, reply=Reply.ALWAYS),
    Req.SET_FEATURES: _fixed(8),
    Req.SET_OWNER: _fixed(0),
    Req.RESET_OWNER: _fixed(0),
    Req.SET_MEM_TABLE: Spec(-1, MEM_TABLE_MAX, (1, MAX_REGIONS), Reply.NONE),
    Req.SET_LOG_BASE: _fixed(LOG_BASE.size, (1, 1)),
    Req.SET_LOG_FD: _fixed(0, (1, 1)),
    Req.SET_VRING_NUM: _fixed(VRING_STATE.size),
    Req.SET_VRING_ADDR: _fixed(VRING_ADDR.size),
    Req.SET_VRING_BASE: _fixed(VRING_STATE.size),
    Req.GET_VRING_BASE: _fixed(VRING_STATE.size, reply=Reply.ALWAYS),
    Req.SET_VRING_KICK: _fixed(8, (0, 1)),
    Req.SET_VRING_CALL: _fixed(8, (0, 1)),
    Req.SET_VRING_ERR: _fixed(8, (0, 1)),
    Req.GET_PROTOCOL_FEATURES: _fixed(0, reply=Reply.ALWAYS),
    Req.SET_PROTOCOL_FEATURES: _fixed(8),
    Req.GET_QUEUE_NUM: _fixed(0, reply=Reply.ALWAYS),
    Req.SET_VRING_ENABLE: _fixed(VRING_STATE.size),
    Req.SEND_RARP: _fixed(8),
    Req.NET_SET_MTU: _fixed(8),
    Req.SET_STATUS: _fixed(8),
    Req.GET_STATUS: _fixed(0, reply=Reply.ALWAYS),
}

MAX_PAYLOAD = max(s.max_size for s in SPECS.values())


@dataclass
class Message:
    request: int
    flags: int
    payload: bytes
    fds: list[int]

    @property
    def name(self) -> str:
        return req_name(self.request)

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & FLAG_NEED_REPLY)


def parse_header(data: bytes) -> tuple[int, int, int]:
    """Validate a 12-byte header; refuses oversize payloads before any payload byte is read."""
    if len(data) != HEADER.size:
        raise ProtocolError(f"header is {len(data)} bytes, needs {HEADER.size}", None, "header")
    request, flags, size = HEADER.unpack(data)
    name = req_name(request)
    if flags & FLAG_VERSION_MASK != VERSION:
        raise ProtocolError(f"version {flags & FLAG_VERSION_MASK}, only 1 is defined", name, "flags")
    if flags & FLAG_REPLY:
        raise ProtocolError("a front-end request must not carry the REPLY flag", name, "flags")
    if size > MAX_PAYLOAD:
        raise ProtocolError(f"payload size {size} exceeds the largest legal {MAX_PAYLOAD}", name, "size")
    return request, flags, size


def spec_for(request: int) -> Spec:
    try:
        return SPECS[Req(request)]
    except (ValueError, KeyError):
        raise ProtocolError("unknown or unsupported request", req_name(request), "request") from None


def validate(msg: Message) -> Spec:
    """Check payload size and fd count against the table (fds are owned by the caller, closed on error)."""
    spec = spec_for(msg.request)
    spec.check(msg.request, len(msg.payload))
    lo, hi = spec.fds
    n = len(msg.fds)
    if msg.request in (Req.SET_VRING_KICK, Req.SET_VRING_CALL, Req.SET_VRING_ERR):
        (val,) = U64.unpack(msg.payload)
        want = 0 if val & VRING_NOFD_MASK else 1
        if n != want:
            raise ProtocolError(f"{n} fds attached, the no-fd bit says {want}", msg.name, "fds")
    elif not lo <= n <= hi:
        raise ProtocolError(f"{n} fds attached, the request takes {lo}..{hi}", msg.name, "fds")
    return spec


def encode(request: int, payload: bytes = b"", flags: int = VERSION) -> bytes:
    return HEADER.pack(request, flags, len(payload)) + payload


def encode_reply(request: int, payload: bytes) -> bytes:
    return encode(request, payload, VERSION | FLAG_REPLY)
