"""What the probes watch: threads by tid, taps by (netns, name), eventfds by (pid, fd). Built by the recorder from
discovery and the command line; handed to ``ProbeMaps.apply`` which writes the BPF maps."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLE_KICK = "kick"  # guest → back-end notification (back-end reads it; a user-space front-end writes it)
ROLE_CALL = "call"  # back-end → guest notification (back-end writes it; KVM irqfd injects)
ROLE_EVENTFD = "eventfd"  # an eventfd of a target process whose role is not known


@dataclass(frozen=True)
class ThreadTarget:
    tid: int
    pid: int
    comm: str
    role: str


TapKey = tuple[str, str]  # (netns label, ifname)


@dataclass(frozen=True)
class TapTarget:
    name: str
    ifindex: int | None = None
    netns: str = "root"  # discovery's label: "root", the /run/netns name, "net:[inode]"; "?" when not found
    vm: str | None = None  # the VM holding it (name, else "pid N"), for people reading the live view

    @property
    def key(self) -> TapKey:
        """(netns, name): one network namespace per VM (Kata) gives several taps of one name."""
        return (self.netns, self.name)


@dataclass(frozen=True)
class FdTarget:
    pid: int
    fd: int
    role: str = ROLE_EVENTFD
    queue: int | None = None
    eventfd_id: int | None = None


@dataclass
class TargetSet:
    threads: dict[int, ThreadTarget] = field(default_factory=dict)  # by tid
    taps: dict[TapKey, TapTarget] = field(default_factory=dict)  # by (netns, name)
    fds: dict[tuple[int, int], FdTarget] = field(default_factory=dict)  # by (pid, fd)

    def add_thread(self, t: ThreadTarget) -> None:
        self.threads[t.tid] = t

    def add_tap(self, t: TapTarget) -> None:
        self.taps[t.key] = t

    def add_fd(self, t: FdTarget) -> None:
        self.fds[(t.pid, t.fd)] = t

    def empty(self) -> bool:
        return not (self.threads or self.taps or self.fds)
