"""Where packets go and come from: ``sink``, ``echo``, ``gen[:SIZE]``, ``tap:NAME[@NETNS]``.

The tap is opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE, one queue fd per queue pair
(include/uapi/linux/if_tun.h); TUNSETVNETHDRSZ makes the kernel's per-packet header the 12-byte
virtio_net_hdr the guest uses. A tap in a netns is created (or attached) by a thread that setns()-ed into
it: TUNSETIFF resolves the name in the netns of the opener, so nothing ever appears in the root namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import struct
import subprocess
import threading
from dataclasses import dataclass

from vhtune.backend import net
from vhtune.errors import CapabilityError, UsageError

TUNSETIFF = 0x400454CA
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
CLONE_NEWNET = 0x40000000
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


@dataclass(frozen=True)
class PortSpec:
    kind: str  # sink | echo | gen | tap
    size: int = 64  # gen frame size (bytes, without the virtio header)
    name: str = ""  # tap name
    netns: str | None = None

    def __str__(self) -> str:
        if self.kind == "gen":
            return f"gen:{self.size}"
        if self.kind == "tap":
            return f"tap:{self.name}" + (f"@{self.netns}" if self.netns else "")
        return self.kind


def parse_port(text: str) -> PortSpec:
    hint = "use sink, echo, gen[:SIZE] or tap:NAME[@NETNS]"
    if text in ("sink", "echo", "gen"):
        return PortSpec(text)
    if text.startswith("gen:"):
        try:
            size = int(text[4:])
        except ValueError:
            raise UsageError(f"port {text!r}: SIZE must be an integer", hint) from None
        if not 60 <= size <= 65535:
            raise UsageError(f"port {text!r}: SIZE must be 60..65535 bytes", hint)
        return PortSpec("gen", size=size)
    if text.startswith("tap:"):
        name, _, ns = text[4:].partition("@")
        if not _NAME.match(name) or (ns and not _NAME.match(ns) and not re.match(r"^[\w.-]{1,64}$", ns)):
            raise UsageError(f"port {text!r}: bad tap or netns name", "names are 1-15 of [A-Za-z0-9_.-]")
        return PortSpec("tap", name=name, netns=ns or None)
    raise UsageError(f"unknown port {text!r}", hint)


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def _open_queues(name: str, n: int, hdr_len: int) -> list[int]:
    fds: list[int] = []
    try:
        for _ in range(n):
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            fds.append(fd)
            ifr = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE)
            fcntl.ioctl(fd, TUNSETIFF, ifr)
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", hdr_len))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


class Tap:
    """A multiqueue tap: ``fds[i]`` serves queue pair i. Created taps vanish when the fds close."""

    def __init__(self, name: str, netns: str | None, queues: int, hdr_len: int = net.HDR_LEN) -> None:
        self.name, self.netns = name, netns
        result: list[int] = []
        error: list[BaseException] = []

        def opener() -> None:
            try:
                if netns:
                    _setns(f"/run/netns/{netns}")
                result.extend(_open_queues(name, queues, hdr_len))
            except BaseException as e:
                error.append(e)

        if netns and not os.path.exists(f"/run/netns/{netns}"):
            raise UsageError(f"network namespace {netns!r} does not exist", f"ip netns add {netns}")
        # A throwaway thread carries the setns, so no other thread of the daemon changes namespace.
        t = threading.Thread(target=opener, name="vhtune-tapopen")
        t.start()
        t.join()
        if error:
            e = error[0]
            if isinstance(e, OSError):
                raise CapabilityError(
                    f"cannot open tap {name}: {e.strerror}",
                    "needs root and /dev/net/tun; an existing tap must be multi_queue vnet_hdr",
                ) from None
            raise e
        self.fds = result
        ip = ["ip"] + (["-n", netns] if netns else []) + ["link", "set", "dev", name, "up"]
        res = subprocess.run(ip, capture_output=True, text=True, timeout=10, check=False)
        if res.returncode != 0:
            self.close()
            raise CapabilityError(f"cannot bring tap {name} up: {res.stderr.strip()}")

    def close(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
