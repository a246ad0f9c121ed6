"""Unix-socket peers from the kernel's sock_diag netlink interface (NETLINK_SOCK_DIAG, AF_UNIX).

/proc/net/unix names the inode and bound path of every unix socket but not its peer; an unnamed client
socket (QEMU's end of a vhost-user connection when the back-end listens) can only be paired with the
accepted socket on the other side through UNIX_DIAG_PEER. The dump covers the namespace the netlink socket
was created in, so for another netns the socket is opened from a thread that first setns()'d into it
(setns(CLONE_NEWNET) only moves the calling thread; the netlink socket keeps that netns afterwards).
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 2
NLMSG_DONE = 3
UDIAG_SHOW_NAME = 0x1
UDIAG_SHOW_PEER = 0x4
UNIX_DIAG_NAME = 0
UNIX_DIAG_PEER = 2
CLONE_NEWNET = 0x40000000

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# struct unix_diag_req: u8 family, u8 protocol, u16 pad, u32 states, u32 ino, u32 show, u32 cookie[2]
_REQ = struct.Struct("=BBHIII2I")
# struct unix_diag_msg: u8 family, u8 type, u8 state, u8 pad, u32 ino, u32 cookie[2]
_MSG = struct.Struct("=BBBBI2I")
_RTA = struct.Struct("=HH")  # rta_len, rta_type
assert _NLMSGHDR.size == 16 and _REQ.size == 24 and _MSG.size == 16


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse_dump(data: bytes, out: dict[int, int]) -> bool:
    """Add ino → peer ino for each message in one recv() of the dump; True when NLMSG_DONE was seen."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size:
            break
        if mtype == NLMSG_DONE:
            return True
        if mtype == NLMSG_ERROR:
            if off + _NLMSGHDR.size + 4 > len(data):
                raise OSError(0, "truncated netlink error message")
            (err,) = struct.unpack_from("=i", data, off + _NLMSGHDR.size)
            raise OSError(-err, os.strerror(-err) if err else "netlink error")
        body = off + _NLMSGHDR.size
        end = min(off + length, len(data))  # never trust a length beyond what was received
        if mtype == SOCK_DIAG_BY_FAMILY and body + _MSG.size <= end:
            ino = _MSG.unpack_from(data, body)[4]
            a = body + _MSG.size
            while a + _RTA.size <= end:
                rta_len, rta_type = _RTA.unpack_from(data, a)
                if rta_len < _RTA.size:
                    break
                if rta_type == UNIX_DIAG_PEER and rta_len >= _RTA.size + 4 and a + _RTA.size + 4 <= end:
                    (peer,) = struct.unpack_from("=I", data, a + _RTA.size)
                    if peer:
                        out[ino] = peer
                a += _align4(rta_len)
        off += _align4(length)
    return False


def _dump_here() -> dict[int, int]:
    out: dict[int, int] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as s:
        req = _REQ.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, UDIAG_SHOW_PEER, 0xFFFFFFFF, 0xFFFFFFFF)
        hdr = _NLMSGHDR.pack(_NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        s.sendto(hdr + req, (0, 0))
        while True:
            data = s.recv(65536)
            if not data or parse_dump(data, out):
                return out


def unix_peers(netns_file: str | None = None) -> dict[int, int]:
    """inode → peer inode of every connected unix socket in a network namespace.

    ``netns_file``: a file naming the netns (/proc/PID/ns/net or /run/netns/NAME); None = the caller's.
    Raises OSError (PermissionError without CAP_SYS_ADMIN for another netns)."""
    if netns_file is None:
        return _dump_here()
    result: dict[int, int] = {}
    error: list[BaseException] = []

    def worker() -> None:
        try:
            fd = os.open(netns_file, os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({netns_file}): {os.strerror(e)}")
            finally:
                os.close(fd)
            result.update(_dump_here())
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=worker, name="vhtune-netns", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result
