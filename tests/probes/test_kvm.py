"""kvm family: irqfd injections from a real (tiny) KVM VM, for both injection paths."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from vhtune.probes import FdTarget, ProbeMaps, TargetSet
from vhtune.probes.maps import Deltas

pytestmark = pytest.mark.root
VM = Path(__file__).with_name("kvm_vm.py")


def _inject(maps: ProbeMaps, mode: str, count: int) -> tuple[int, int, Deltas]:
    proc = subprocess.Popen(
        [sys.executable, str(VM), mode, str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        pid, fd = (int(x) for x in proc.stdout.readline().split())
        ts = TargetSet()
        ts.add_fd(FdTarget(pid, fd, "call", 1))
        maps.apply(ts)
        maps.read()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        time.sleep(0.05)  # the last work item
        d = maps.read()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    return pid, fd, d


def test_msi_irqfd_injections_are_attributed_to_the_eventfd_write(maps: ProbeMaps) -> None:
    # MSI routes are injected inside eventfd_write (kvm_arch_set_irq_inatomic): same thread, same syscall.
    pid, fd, d = _inject(maps, "msi", 300)
    assert d.fds[(pid, fd)] == {"writes": 300, "reads": 0, "injections": 300}
    ours = [i for i in d.irqs if i["via_pid"] == pid]
    assert ours and all(i["kind"] == "msi" and i["gsi"] == 0x31 and i["via_fd"] == fd for i in ours)
    assert sum(i["count"] for i in ours) == 300


def test_pic_irqfd_injections_run_in_a_kworker_and_are_counted_by_gsi(maps: ProbeMaps) -> None:
    # Irqchip GSIs cannot be injected atomically: irqfd queues work, a kworker calls kvm_set_irq(1) then (0).
    pid, fd, d = _inject(maps, "pic", 300)
    assert d.fds[(pid, fd)]["writes"] == 300 and d.fds[(pid, fd)]["injections"] == 0
    asserts = [i for i in d.irqs if i["kind"] == "set_irq" and i["gsi"] == 7 and i["level"] == 1]
    # Other tests may run KVM VMs too; only count injections from kworkers (not from the writer itself).
    n = sum(i["count"] for i in asserts if i["pid"] != pid)
    assert n == pytest.approx(300, rel=0.05)
    assert not [i for i in asserts if i["via_pid"] == pid]
