"""Taps: which processes hold them (tun fds), and their link facts from the namespace they live in.

A process attached to a tap holds an fd whose link is ``/dev/net/tun``; its fdinfo names the interface in
an ``iff:`` line (tun_chr_show_fdinfo). A multiqueue tap has one such fd per queue.

Neither the fd link nor fdinfo says which netns the interface is in, and the holder's netns is no answer: a
process may setns() to create a tap elsewhere (one QEMU or daemon can hold "tap0" of netns A and "tap0" of
netns B), and ``ip link set ... netns`` moves a tap away from its creator. The kernel answers exactly:

* ``pidfd_getfd(pidfd_open(pid), fd, 0)`` (kernel >= 5.6; PTRACE_MODE_ATTACH_REALCREDS on the target, root
  passes) copies another process's fd into ours, close-on-exec. It is the same open file: closing the copy
  detaches no queue while the holder keeps its fd (one it closed meanwhile goes when the copy is closed).
* ``ioctl(copy, TUNGETDEVNETNS)`` (_IO('T', 227), include/uapi/linux/if_tun.h, kernel >= 5.2; CAP_NET_ADMIN
  in the user namespace owning the device's netns) returns a new fd on the netns of the *device*
  (dev_net: after ``ip link set netns`` it names the new netns, while SIOCGSKNS on the same fd still names
  the one the fd was opened in; both seen on 6.18). Its ``st_ino`` is the inode /proc/PID/ns/net shows as
  ``net:[INODE]``.

Errnos seen on 6.18: EBADFD from the ioctl for a tun fd attached to no device; ENOTTY for a fd that is not a
tun fd (replaced meanwhile); EBADF from pidfd_getfd for a fd closed meanwhile; ESRCH from pidfd_open /
pidfd_getfd when the process exited. Expected on older kernels, not seen here: ENOSYS (no pidfd_getfd),
EINVAL (tun's answer to an unknown ioctl). All of these fall back to the lookup by name, owner's netns first,
without a word; EPERM / EACCES is reported once per process by the caller.

Cost (2-CPU nested VM, 6.18, Python 3.11, medians of 7 x 2000 calls): ``device_netns`` takes ~48 µs for a
process holding 8 tun fds (~6 µs per fd: pidfd_getfd, ioctl, fstat, two closes) and 10-13 µs for one holding
one (pidfd_open and close included); reading an fd's fdinfo, already done for ``iff:``, costs ~25 µs.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vhtune.discover.model import TapInfo
from vhtune.discover.netns import NetnsRef

TUN_DEVICE = "/dev/net/tun"
TUNGETDEVNETNS = (ord("T") << 8) | 227  # _IO('T', 227)
# Syscall numbers from 424 on are the same on every architecture but alpha (asm-generic/unistd.h: 438).
_NR_PIDFD_GETFD = 438
_libc = ctypes.CDLL(None, use_errno=True)
# Errnos that say nothing about the other fds of the process: skip this fd only.
_FD_ONLY = (errno.EBADF, errno.EBADFD, errno.ENOTTY, errno.EINVAL)


@dataclass(frozen=True)
class TunFd:
    pid: int
    fd: int
    iff: str
    netns: int | None  # inode of the holder's netns
    dev_netns: int | None = None  # inode of the netns the device lives in (TUNGETDEVNETNS), None if unknown


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    r = int(_libc.syscall(_NR_PIDFD_GETFD, pidfd, fd, 0))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def device_netns(pid: int, fds: Iterable[int]) -> dict[int, int]:
    """fd → inode of the netns the tap of ``pid``'s tun fd ``fd`` lives in, for the fds the kernel answers
    for (see the module docstring). Every fd duplicated here is closed again.

    Raises PermissionError when refused, other OSErrors that concern the whole process (ProcessLookupError
    when it exited, ENOSYS on an old kernel)."""
    out: dict[int, int] = {}
    pidfd = os.pidfd_open(pid)
    try:
        for fd in fds:
            try:
                copy = _pidfd_getfd(pidfd, fd)
                try:
                    ns = fcntl.ioctl(copy, TUNGETDEVNETNS)
                    try:
                        out[fd] = os.fstat(ns).st_ino
                    finally:
                        os.close(ns)
                finally:
                    os.close(copy)
            except OSError as exc:
                if exc.errno not in _FD_ONLY:
                    raise
    finally:
        os.close(pidfd)
    return out


def _stats(link: dict[str, Any]) -> dict[str, int]:
    s = link.get("stats64") or link.get("stats") or {}
    out: dict[str, int] = {}
    for direction in ("rx", "tx"):
        for key in ("packets", "bytes", "dropped", "errors"):
            v = (s.get(direction) or {}).get(key)
            if isinstance(v, int):
                out[f"{direction}_{key}"] = v
    return out


def fill_from_link(tap: TapInfo, link: dict[str, Any]) -> None:
    tap.ifindex = link.get("ifindex")
    tap.txqueuelen = link.get("txqlen")
    info = (link.get("linkinfo") or {}).get("info_data") or {}
    if "vnet_hdr" in info:
        tap.vnet_hdr = bool(info["vnet_hdr"])
    if "multi_queue" in info:
        tap.multi_queue = bool(info["multi_queue"])
    tap.stats = _stats(link)


def assemble_taps(
    tun_fds: list[TunFd],
    namespaces: dict[int, NetnsRef],
    self_ns: int | None,
    links_of: Callable[[NetnsRef], dict[str, dict[str, Any]] | None],
    problems: list[str],
) -> list[TapInfo]:
    """Find the netns and link of each tap the tun fds are attached to; fds of one name in one netns are one tap.

    An fd whose device netns the kernel told (``dev_netns``) is looked up there only; another is looked up by
    name in its holder's netns, then the caller's, then the others. ``links_of(ns)`` returns ifname → link
    JSON for a namespace (cached by the caller; None when it could not be listed, the reason already in
    ``problems``)."""

    def tap_link(ns: int | None, iff: str) -> dict[str, Any] | None:
        ref = namespaces.get(ns) if ns is not None else None
        link = (links_of(ref) or {}).get(iff) if ref is not None else None
        if link is None or (link.get("linkinfo") or {}).get("info_kind") not in (None, "tun"):
            return None
        return link

    # (name, device netns when known or found by name, holder netns when neither) → fds
    groups: dict[tuple[str, int | None, int | None], list[TunFd]] = {}
    for t in tun_fds:
        ns = t.dev_netns
        if ns is None:
            order = dict.fromkeys(n for n in (t.netns, self_ns, *sorted(namespaces)) if n in namespaces)
            ns = next((n for n in order if tap_link(n, t.iff) is not None), None)
        groups.setdefault((t.iff, ns, t.netns if ns is None else None), []).append(t)
    taps: list[TapInfo] = []
    for (iff, ns, holder_ns), fds in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or kv[0][2] or 0)):
        tap = TapInfo(name=iff, owner_pids=tuple(sorted({f.pid for f in fds})), queues=len(fds))
        link = tap_link(ns, iff)
        if link is not None and ns is not None:
            tap.netns = namespaces[ns].label
            fill_from_link(tap, link)
        elif ns is not None:
            tap.netns = namespaces[ns].label if ns in namespaces else f"net:[{ns}]"
            problems.append(
                f"tap {iff} (held by pid {', '.join(map(str, tap.owner_pids))}) lives in network namespace "
                f"{tap.netns}, where it could not be listed; its counters and settings are missing."
            )
        else:
            if holder_ns is not None and holder_ns in namespaces:
                tap.netns = namespaces[holder_ns].label
            problems.append(
                f"tap {iff} (held by pid {', '.join(map(str, tap.owner_pids))}) was not found in any "
                "network namespace that could be listed; its counters and settings are missing."
            )
        taps.append(tap)
    return taps
