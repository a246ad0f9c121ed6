"""Per-network-namespace facts that /proc cannot give: link details and unix-socket peers.

``NetnsAccess`` is the seam: ``HostNetns`` asks the kernel (one ``ip -j -d -s link show`` per namespace,
sock_diag for unix peers); ``RecordedNetns`` replays both from files (fixture trees, captured hosts).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vhtune.discover import sockdiag
from vhtune.errors import DiscoveryError

IP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class NetnsRef:
    inode: int
    label: str  # "root" (the caller's own netns), the /run/netns name, or "net:[inode]"
    name: str | None  # /run/netns name
    pid: int | None  # a process inside it (for /proc/PID/ns/net)
    is_self: bool


class NetnsAccess(Protocol):
    def links(self, ns: NetnsRef) -> list[dict[str, Any]]:
        """The JSON of ``ip -j -d -s link show`` run inside ``ns``."""
        ...

    def unix_peers(self, ns: NetnsRef) -> dict[int, int]:
        """inode → peer inode of every connected unix socket of ``ns``."""
        ...


class HostNetns:
    """The real host: ``ip`` (via ``ip -n NAME`` or ``nsenter --net=/proc/PID/ns/net``) and sock_diag."""

    def __init__(self, proc: Path = Path("/proc"), run_netns: Path = Path("/run/netns")) -> None:
        self.proc = proc
        self.run_netns = run_netns

    def _ns_file(self, ns: NetnsRef) -> str:
        if ns.name is not None:
            return str(self.run_netns / ns.name)
        return str(self.proc / str(ns.pid) / "ns" / "net")

    def links(self, ns: NetnsRef) -> list[dict[str, Any]]:
        ip = shutil.which("ip")
        if ip is None:
            raise DiscoveryError("the ip command (iproute2) is not installed", hint="apt-get install iproute2")
        cmd = [ip, "-j", "-d", "-s", "link", "show"]
        if not ns.is_self:
            if ns.name is not None:
                cmd[1:1] = ["-n", ns.name]
            else:
                nsenter = shutil.which("nsenter")
                if nsenter is None:
                    raise DiscoveryError("nsenter (util-linux) is not installed", hint="apt-get install util-linux")
                cmd = [nsenter, f"--net={self._ns_file(ns)}", *cmd]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DiscoveryError(f"`{' '.join(cmd)}` did not answer within {IP_TIMEOUT_S:g} s") from exc
        if res.returncode != 0:
            msg = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise DiscoveryError(f"`{' '.join(cmd)}` failed: {msg}")
        data = json.loads(res.stdout or "[]")
        return data if isinstance(data, list) else []

    def unix_peers(self, ns: NetnsRef) -> dict[int, int]:
        return sockdiag.unix_peers(None if ns.is_self else self._ns_file(ns))


class RecordedNetns:
    """Replays ``links/<label>.json`` (``ip -j -d -s link show`` output) and ``unix_peers.json``
    (``{"<label>": {"<inode>": <peer inode>}}``) from a directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    @staticmethod
    def _file_label(ns: NetnsRef) -> str:
        return ns.label.replace(":", "_").replace("[", "").replace("]", "")

    def links(self, ns: NetnsRef) -> list[dict[str, Any]]:
        f = self.dir / "links" / f"{self._file_label(ns)}.json"
        if not f.exists():
            return []
        data = json.loads(f.read_text())
        return data if isinstance(data, list) else []

    def unix_peers(self, ns: NetnsRef) -> dict[int, int]:
        f = self.dir / "unix_peers.json"
        if not f.exists():
            return {}
        table = json.loads(f.read_text()).get(ns.label, {})
        return {int(k): int(v) for k, v in table.items()}
