"""notify family: eventfd write()/read() calls of a process we control, counted exactly."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.conftest import Child
from vhtune.probes import FdTarget, ProbeMaps, TargetSet
from vhtune.probes.maps import Deltas
from vhtune.record.select import proc_eventfds

pytestmark = pytest.mark.root

# Two eventfds (a "kick" and a "call"); on "go" it writes the call fd 1234 times, reads the kick fd 7
# times (after writing it 7 times itself, so reads do not block), and also writes a pipe (not watched).
CHILD = """
import os, sys
call, kick = os.eventfd(0), os.eventfd(0)
r, w = os.pipe()
print(call, kick, flush=True)
sys.stdin.readline()
for _ in range(1234):
    os.eventfd_write(call, 1)
for _ in range(7):
    os.eventfd_write(kick, 1)
    os.eventfd_read(kick)
for _ in range(50):
    os.write(w, b"x")
print("done", flush=True)
sys.stdin.readline()
"""


def test_eventfd_writes_and_reads_are_counted_exactly(maps: ProbeMaps) -> None:
    with Child([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        call, kick = (int(x) for x in proc.stdout.readline().split())
        found = dict(proc_eventfds(proc.pid))
        assert call in found and kick in found  # discovery of eventfds by /proc/PID/fd links
        ts = TargetSet()
        ts.add_fd(FdTarget(proc.pid, call, "call", 0, found[call]))
        ts.add_fd(FdTarget(proc.pid, kick, "kick", 1, found[kick]))
        maps.apply(ts)
        maps.read()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        d = maps.read()
        proc.stdin.write("end\n")
        proc.stdin.flush()
        proc.wait(timeout=10)
    assert d.fds[(proc.pid, call)] == {"writes": 1234, "reads": 0, "injections": 0}
    assert d.fds[(proc.pid, kick)] == {"writes": 7, "reads": 7, "injections": 0}
    assert len(d.fds) == 2  # the pipe was not watched


def _count_child(
    maps: ProbeMaps, code: str, watch: Callable[[int, list[int]], TargetSet]
) -> tuple[int, list[int], Deltas]:
    """Run ``code`` (prints its fd numbers, waits for a line, then works and exits), watch what ``watch(pid,
    fds)`` names, and return (pid, fds, the deltas of its work)."""
    with Child([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        fds = [int(x) for x in proc.stdout.readline().split()]
        maps.apply(watch(proc.pid, fds))
        maps.read()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.wait(timeout=10)
        return proc.pid, fds, maps.read()


def _fds(*targets: FdTarget) -> TargetSet:
    ts = TargetSet()
    for t in targets:
        ts.add_fd(t)
    return ts


def test_same_fd_number_in_another_process_is_not_counted(maps: ProbeMaps) -> None:
    code = (
        "import os, sys\nfd = os.eventfd(0)\nprint(fd, flush=True)\nsys.stdin.readline()\n"
        "for _ in range(300): os.eventfd_write(fd, 1)\n"
    )

    def watch(pid: int, fds: list[int]) -> TargetSet:
        ghost = pid + 1_000_000  # above pid_max: no such process
        return _fds(FdTarget(pid, fds[0], "call", 0), FdTarget(ghost, fds[0], "call", 0))

    pid, (fd,), d = _count_child(maps, code, watch)
    assert d.fds[(pid, fd)]["writes"] == 300
    assert d.fds[(pid + 1_000_000, fd)]["writes"] == 0


def test_targets_beyond_the_map_sizes_are_skipped_and_said(maps: ProbeMaps) -> None:
    from vhtune.probes import TapTarget

    ts = TargetSet()
    n = maps.fd_slots.size + 3
    for fd in range(n):
        ts.add_fd(FdTarget(1_000_000_000, fd, "kick", 0))  # a tgid that cannot exist: nothing is counted
    ts.add_tap(TapTarget("this-name-is-far-too-long"))
    ch = maps.apply(ts)
    assert len(ch.added) == maps.fd_slots.size and len(maps.targets.fds) == maps.fd_slots.size
    assert len(ch.skipped) == 4
    assert any("more than 1024 eventfd targets" in s for s in ch.skipped)
    assert any(s.startswith("tap this-name-is-far-too-long: interface name") for s in ch.skipped)
    assert maps.tap_slots.slots == {}  # the bad name did not take a slot


# An eventfd moved to fd 1500 (past the direct fd_direct columns) and one at a low number.
HIGH_FD_CHILD = """
import os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), max(hard, 2048)))
low = os.eventfd(0)
high = os.dup2(os.eventfd(0), 1500)
print(low, high, flush=True)
sys.stdin.readline()
for _ in range(400): os.eventfd_write(low, 1)
for _ in range(600): os.eventfd_write(high, 1)
"""


@pytest.mark.parametrize("layout", ["high-fd", "no-free-row", "shared-filter-entry"])
def test_fds_the_direct_table_cannot_hold_are_counted_through_the_hash(maps: ProbeMaps, layout: str) -> None:
    """fd ≥ 1024, a process that got no fd_direct row, a tgid sharing its filter entry with another watched
    tgid: each takes the notify_fds hash path and is still counted exactly."""

    def watch(pid: int, fds: list[int]) -> TargetSet:
        low, high = fds
        assert high == 1500
        ts = _fds(FdTarget(pid, low, "call", 0), FdTarget(pid, high, "kick", 1))
        if layout == "no-free-row":
            maps._free_rows.clear()  # as if 64 other processes held every row
        if layout == "shared-filter-entry":
            ts.add_fd(FdTarget(pid + 65536 * 200, 5, "call", 0))  # same low 16 bits, above pid_max
        return ts

    pid, (low, high), d = _count_child(maps, HIGH_FD_CHILD, watch)
    assert d.fds[(pid, low)]["writes"] == 400
    assert d.fds[(pid, high)]["writes"] == 600
