"""Network namespaces and links for the lab, with teardown that always runs.

The network rule: the lab gives addresses only to interfaces inside namespaces it created, never to the root
namespace. ``Netns.addr()`` is therefore the only way this module assigns an address. Deleting a netns destroys
the veth ends and taps inside it (a veth pair dies with either end).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from vhtune.errors import LabError, UsageError
from vhtune.lab.names import PREFIX, check_ifname, lab_name
from vhtune.lab.proc import LabProcess, run

NETNS_DIR = Path("/run/netns")


def list_netns() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())


def links(ns: str | None = None) -> list[dict[str, object]]:
    """``ip -j link`` of the root namespace or of ``ns``."""
    argv = ["ip", "-j", "link", "show"] if ns is None else ["ip", "-n", ns, "-j", "link", "show"]
    out = run(argv).stdout.strip()
    return list(json.loads(out)) if out else []


def link_names(ns: str | None = None) -> list[str]:
    return [str(link["ifname"]) for link in links(ns)]


def link_exists(name: str, ns: str | None = None) -> bool:
    argv = ["ip", "link", "show", "dev", name] if ns is None else ["ip", "-n", ns, "link", "show", "dev", name]
    return run(argv, check=False).returncode == 0


def delete_link(name: str, ns: str | None = None) -> None:
    argv = ["ip", "link", "del", "dev", name] if ns is None else ["ip", "-n", ns, "link", "del", "dev", name]
    run(argv, check=False)


class Netns:
    """A named network namespace the lab owns; ``with Netns() as ns:`` creates it and always deletes it."""

    def __init__(self, name: str | None = None) -> None:
        self.name = check_ifname(name) if name else lab_name("n")
        if not self.name.startswith(PREFIX):
            raise UsageError(f"netns {self.name!r} does not start with the lab prefix {PREFIX!r}")
        self.created = False

    def create(self) -> Netns:
        if self.name in list_netns():
            raise LabError(f"netns {self.name} already exists", hint="run `vhtune lab clean`")
        # Marked before `ip netns add` (an interrupt may land after the kernel made it): destroy() of a name
        # that never came to be is a harmless failed `ip netns del` of a name only this process uses.
        self.created = True
        try:
            run(["ip", "netns", "add", self.name])
            run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        except BaseException:
            # `with Netns()` runs no __exit__ when __enter__ raises: nobody else would delete it.
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        if not self.created:
            return
        # Processes still inside keep the namespace alive after `ip netns del` (it only unmounts the name);
        # callers stop their processes first. Links inside go away with the namespace.
        run(["ip", "netns", "del", self.name], check=False)
        self.created = False

    def __enter__(self) -> Netns:
        return self.create()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.destroy()

    # --- running things inside ------------------------------------------------------------------------
    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(self.argv(argv), timeout=timeout, check=check)

    def spawn(self, argv: Sequence[str], *, log: Path | None = None, name: str | None = None) -> LabProcess:
        return LabProcess(self.argv(argv), log=log, name=name or Path(argv[0]).name)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", self.name, *args], check=check)

    # --- links ------------------------------------------------------------------------------------------
    def addr(self, ifname: str, cidr: str) -> None:
        """Give ``ifname`` (inside this netns) the address ``cidr`` and bring it up."""
        self.ip("addr", "add", cidr, "dev", ifname)
        self.ip("link", "set", ifname, "up")

    def up(self, ifname: str) -> None:
        self.ip("link", "set", ifname, "up")

    def has_link(self, ifname: str) -> bool:
        return link_exists(ifname, self.name)

    def adopt(self, ifname: str) -> None:
        """Move a root-namespace link (e.g. a tap a peer created) into this netns."""
        check_ifname(ifname)
        run(["ip", "link", "set", "dev", ifname, "netns", self.name])

    def link_stats(self, ifname: str) -> dict[str, int]:
        """rx/tx packets, bytes, dropped of a link inside this netns (``ip -s -j link``)."""
        out = json.loads(self.ip("-s", "-j", "link", "show", "dev", ifname).stdout)
        st = out[0]["stats64"]
        return {
            "rx_packets": int(st["rx"]["packets"]),
            "rx_bytes": int(st["rx"]["bytes"]),
            "rx_dropped": int(st["rx"]["dropped"]),
            "tx_packets": int(st["tx"]["packets"]),
            "tx_bytes": int(st["tx"]["bytes"]),
            "tx_dropped": int(st["tx"]["dropped"]),
        }


def veth_pair(a: Netns, a_if: str, b: Netns, b_if: str) -> None:
    """A veth pair with one end in each of two lab namespaces (created there directly, never in root)."""
    check_ifname(a_if)
    check_ifname(b_if)
    run(["ip", "-n", a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name])
    a.up(a_if)
    b.up(b_if)


def tap(ns: Netns, ifname: str, *, multi_queue: bool = False) -> None:
    """A persistent tap inside ``ns`` (a peer attaches to it by name from inside the same netns)."""
    check_ifname(ifname)
    args = ["tuntap", "add", "dev", ifname, "mode", "tap"]
    if multi_queue:
        args.append("multi_queue")
    ns.ip(*args)


@contextlib.contextmanager
def netns(name: str | None = None) -> Iterator[Netns]:
    with Netns(name) as ns:
        yield ns
