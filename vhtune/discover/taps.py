"""Taps: which processes hold them (tun fds), and their link facts from the namespace they live in.

A process attached to a tap holds an fd whose link is ``/dev/net/tun``; its fdinfo names the interface in
an ``iff:`` line (tun_chr_show_fdinfo). A multiqueue tap has one such fd per queue. The fd does not say which
netns the interface is in: it is looked up first in the owner's netns (where it was created, normally), then
in the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vhtune.discover.model import TapInfo
from vhtune.discover.netns import NetnsRef

TUN_DEVICE = "/dev/net/tun"


@dataclass(frozen=True)
class TunFd:
    pid: int
    fd: int
    iff: str
    netns: int | None  # inode of the holder's netns


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
    """Group tun fds by interface name and owner netns, then find each interface's link.

    ``links_of(ns)`` returns ifname → link JSON for a namespace (cached by the caller; None when it could
    not be listed, the reason already in ``problems``)."""
    groups: dict[tuple[str, int | None], list[TunFd]] = {}
    for t in tun_fds:
        groups.setdefault((t.iff, t.netns), []).append(t)
    taps: list[TapInfo] = []
    for (iff, owner_ns), fds in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        tap = TapInfo(
            name=iff,
            owner_pids=tuple(sorted({f.pid for f in fds})),
            queues=len(fds),
        )
        order: list[int] = []
        for ns in (owner_ns, self_ns, *sorted(namespaces)):
            if ns is not None and ns in namespaces and ns not in order:
                order.append(ns)
        found = False
        for ns_inode in order:
            ref = namespaces[ns_inode]
            links = links_of(ref)
            if links and iff in links:
                link = links[iff]
                kind = (link.get("linkinfo") or {}).get("info_kind")
                if kind not in (None, "tun"):
                    continue
                tap.netns = ref.label
                fill_from_link(tap, link)
                found = True
                break
        if not found:
            if owner_ns is not None and owner_ns in namespaces:
                tap.netns = namespaces[owner_ns].label
            problems.append(
                f"tap {iff} (held by pid {', '.join(map(str, tap.owner_pids))}) was not found in any "
                "network namespace that could be listed; its counters and settings are missing."
            )
        taps.append(tap)
    return taps
