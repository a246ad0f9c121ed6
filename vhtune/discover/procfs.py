"""Reading /proc and /sys under a root directory (the seam unit tests use to feed a fake tree).

Every method raises ``OSError`` (FileNotFoundError / ProcessLookupError for a vanished process,
PermissionError) and leaves the policy — skip, report in ``Snapshot.problems`` — to the caller.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

from vhtune import cpulist
from vhtune.discover.model import SCHED_POLICY_NAMES

_FD_SOCKET = re.compile(r"^socket:\[(\d+)\]$")
_NS_LINK = re.compile(r"^net:\[(\d+)\]$")
# One /proc/net/unix entry (unix_seq_show: "%pK: %08X %08X %08X %04X %02X %5lu" and " <name>" when bound):
# groups Flags, Type, St, Inode, Path.
_UNIX_LINE = re.compile(
    r"^[0-9a-fA-F]+: [0-9A-F]{8} [0-9A-F]{8} ([0-9A-F]{8}) ([0-9A-F]{4}) ([0-9A-F]{2}) +(\d+)(?: (.*))?$", re.DOTALL
)

# /proc/net/unix "Flags" column: __SO_ACCEPTCON (0x10000) marks a listening socket.
_SO_ACCEPTCON = 0x10000
# "St" column: socket_state values; SS_CONNECTED = 3.
SS_UNCONNECTED = 1
SS_CONNECTED = 3


def parse_cpulist(text: str) -> tuple[int, ...]:
    """``0-3,8,10-11`` → (0, 1, 2, 3, 8, 10, 11); the format of Cpus_allowed_list and node*/cpulist."""
    return tuple(cpulist.parse_cpulist(text))


@dataclass(frozen=True)
class SchedStat:
    last_cpu: int | None
    nice: int | None
    rt_priority: int | None
    policy: str | None


@dataclass(frozen=True)
class UnixEntry:
    """One line of /proc/net/unix."""

    inode: int
    listening: bool
    state: int  # SS_UNCONNECTED for listeners, SS_CONNECTED for both ends of a connection
    path: str | None  # bound name; an accepted socket reports its listener's name; "@..." = abstract


class ProcFS:
    def __init__(self, root: Path = Path("/")) -> None:
        self.root = Path(root)
        self.proc = self.root / "proc"
        self.sys = self.root / "sys"
        # Hot paths build plain strings: pathlib costs ~5 µs per join, a pass does thousands.
        self._p = str(self.proc)

    # --- processes and threads -------------------------------------------------------------------
    def pids(self) -> list[int]:
        return sorted(int(n) for n in os.listdir(self._p) if n.isdigit())

    def _task(self, pid: int, tid: int | None) -> str:
        return f"{self._p}/{pid}" if tid is None else f"{self._p}/{pid}/task/{tid}"

    def _read(self, path: str) -> str:
        with open(path, errors="replace") as f:
            return f.read()

    def comm(self, pid: int, tid: int | None = None) -> str:
        return self._read(f"{self._task(pid, tid)}/comm").rstrip("\n")

    def cmdline(self, pid: int) -> list[str]:
        with open(f"{self._p}/{pid}/cmdline", "rb") as f:
            raw = f.read()
        # NUL-terminated arguments; a process that rewrote its argv may lack the final NUL.
        return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")] if raw else []

    def tids(self, pid: int) -> list[int]:
        return sorted(int(n) for n in os.listdir(f"{self._p}/{pid}/task") if n.isdigit())

    def sched_stat(self, pid: int, tid: int | None = None) -> SchedStat:
        """The scheduling fields of stat: nice (19), processor (39, the CPU it last ran on), rt_priority (40)
        and policy (41).

        comm (field 2) is in parentheses and may hold spaces and ')' ("CPU 0/TCG"), so fields are
        counted after the last ')'; field 3 is the first one after it."""
        text = self._read(f"{self._task(pid, tid)}/stat")
        rest = text[text.rindex(")") + 2 :].split()

        def field(n: int) -> int | None:
            return int(rest[n - 3]) if len(rest) > n - 3 and rest[n - 3].lstrip("-").isdigit() else None

        pol = field(41)
        return SchedStat(
            last_cpu=field(39),
            nice=field(19),
            rt_priority=field(40),
            policy=None if pol is None else SCHED_POLICY_NAMES.get(pol, str(pol)),
        )

    def status(self, pid: int, tid: int | None = None) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self._read(f"{self._task(pid, tid)}/status").splitlines():
            key, _, value = line.partition(":")
            out[key] = value.strip()
        return out

    def affinity(self, pid: int, tid: int | None = None) -> tuple[int, ...]:
        return parse_cpulist(self.status(pid, tid).get("Cpus_allowed_list", ""))

    def cwd(self, pid: int) -> str:
        """The working directory of ``pid`` (where its relative paths start)."""
        return os.readlink(f"{self._p}/{pid}/cwd")

    # --- file descriptors ------------------------------------------------------------------------
    def fd_links(self, pid: int) -> dict[int, str]:
        """fd → link target. Fds closed while listing are skipped; an unreadable fd dir raises."""
        out: dict[int, str] = {}
        with os.scandir(f"{self._p}/{pid}/fd") as it:
            for entry in it:
                try:
                    out[int(entry.name)] = os.readlink(entry.path)
                except (FileNotFoundError, ValueError):
                    continue
        return out

    def fdinfo(self, pid: int, fd: int) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self._read(f"{self._p}/{pid}/fdinfo/{fd}").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out

    @staticmethod
    def socket_inode(link: str) -> int | None:
        m = _FD_SOCKET.match(link)
        return int(m.group(1)) if m else None

    # --- namespaces and unix sockets -------------------------------------------------------------
    def netns(self, pid: int | str) -> int:
        """Inode of the network namespace of ``pid`` ("self" for the caller)."""
        link = os.readlink(f"{self._p}/{pid}/ns/net")
        m = _NS_LINK.match(link)
        if not m:
            raise FileNotFoundError(f"unexpected ns link {link!r}")
        return int(m.group(1))

    def netns_names(self) -> dict[int, str]:
        """netns inode → name for the bind mounts in /run/netns (``ip netns add NAME``)."""
        out: dict[int, str] = {}
        d = self.root / "run" / "netns"
        try:
            names = sorted(os.listdir(d))
        except OSError:
            return out
        for name in names:
            try:
                out[os.stat(d / name).st_ino] = name
            except OSError:
                continue
        return out

    def unix_table(self, pid: int | str) -> list[UnixEntry]:
        """/proc/PID/net/unix: the unix sockets of PID's network namespace (the table is per netns;
        an accepted socket lives in the connecting side's netns)."""
        out: list[UnixEntry] = []
        with open(self.proc / str(pid) / "net" / "unix", errors="replace", newline="\n") as f:
            next(f, None)  # header
            for line in f:
                # Num RefCount Protocol Flags Type St Inode [Path]; the path may contain spaces, and newlines:
                # the kernel prints it raw, so a line that is no entry continues the previous entry's path.
                m = _UNIX_LINE.match(line.rstrip("\n"))
                if m is None:
                    if not out or out[-1].path is None:
                        raise ValueError(f"unexpected line in /proc/{pid}/net/unix: {line[:80]!r}")
                    out[-1] = dataclasses.replace(out[-1], path=f"{out[-1].path}\n{line.rstrip(chr(10))}")
                    continue
                out.append(
                    UnixEntry(
                        inode=int(m.group(4)),
                        listening=bool(int(m.group(1), 16) & _SO_ACCEPTCON),
                        state=int(m.group(3), 16),
                        path=m.group(5),
                    )
                )
        return out

    # --- memory and topology ---------------------------------------------------------------------
    def numa_maps(self, pid: int) -> str:
        return self._read(f"{self._p}/{pid}/numa_maps")

    def online_cpus(self) -> tuple[int, ...]:
        try:
            return parse_cpulist((self.sys / "devices/system/cpu/online").read_text())
        except OSError:
            return tuple(range(os.cpu_count() or 1)) if self.root == Path("/") else ()

    def cpu_nodes(self) -> dict[int, int]:
        """CPU → NUMA node from /sys/devices/system/node/node*/cpulist (empty without NUMA sysfs)."""
        out: dict[int, int] = {}
        base = self.sys / "devices/system/node"
        try:
            names = os.listdir(base)
        except OSError:
            return out
        for name in names:
            if not (name.startswith("node") and name[4:].isdigit()):
                continue
            try:
                cpus = parse_cpulist((base / name / "cpulist").read_text())
            except OSError:
                continue
            for c in cpus:
                out[c] = int(name[4:])
        return out
