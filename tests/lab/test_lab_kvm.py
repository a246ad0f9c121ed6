"""kvm-irqfd: a real KVM VM whose doorbells are ioeventfds and whose interrupt line is an irqfd."""

from __future__ import annotations

import os
import select
import threading
from pathlib import Path

import pytest

from vhtune.errors import LabError, UsageError
from vhtune.lab import kvm, kvm_guest, scenarios
from vhtune.lab.kvm_front import KvmIrqfdFrontend


def test_guest_code_layout() -> None:
    lay = kvm_guest.GuestLayout()
    code = kvm_guest.main_code(lay)
    assert code[0] == 0xFA  # cli first: nothing interrupts the PIC set-up
    assert bytes([0xFB, 0xF4, 0xFA]) in code  # sti; hlt; cli — the race-free wait
    assert code.count(bytes([0xBA]) + lay.doorbell_port.to_bytes(2, "little")) == 1
    assert len(code) <= kvm_guest.HANDLER - kvm_guest.CODE
    assert kvm_guest.handler_code()[-1] == 0xCF  # iret
    addr, entry = kvm_guest.ivt_entry(lay)
    assert addr == (0x20 + lay.irq) * 4 and entry == kvm_guest.HANDLER.to_bytes(2, "little") + b"\0\0"
    with pytest.raises(UsageError):
        kvm_guest.GuestLayout(irq=2).validate()
    with pytest.raises(UsageError):
        kvm_guest.GuestLayout(num=100).validate()


def test_front_end_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        KvmIrqfdFrontend(tmp_path / "s", count=0)
    with pytest.raises(UsageError):
        KvmIrqfdFrontend(tmp_path / "s", count=10, size=4000)
    with pytest.raises(LabError, match="cannot connect"):
        KvmIrqfdFrontend(tmp_path / "absent.sock", count=10).run(timeout=2)


def test_real_kvm_vm_doorbell_and_irqfd(require_root: None) -> None:
    """The VM alone: a thread plays the back-end (read kick, write call); N doorbells give N interrupts."""
    n = 500
    lay = kvm_guest.GuestLayout()
    with kvm.KvmVm() as vm:
        kick = vm.ioeventfd(lay.doorbell_port, 1)
        call = vm.irqfd(lay.irq)
        vm.load(kvm_guest.CODE, kvm_guest.main_code(lay))
        vm.load(kvm_guest.HANDLER, kvm_guest.handler_code())
        vm.load(*kvm_guest.ivt_entry(lay))
        vm.set_u16(kvm_guest.TARGET, n)
        vm.reset_real_mode(kvm_guest.CODE, kvm_guest.STACK_TOP)
        seen = [0]
        done = threading.Event()

        def backend() -> None:
            while not done.is_set():
                if select.select([kick], [], [], 0.1)[0]:
                    seen[0] += os.eventfd_read(kick)
                    os.eventfd_write(call, 1)

        t = threading.Thread(target=backend, daemon=True)
        t.start()
        try:
            res = vm.run_until_port({lay.done_port})
        finally:
            done.set()
            t.join(2)
        assert res.port == lay.done_port
        assert vm.u16(kvm_guest.KICKS) == n and seen[0] == n
        assert vm.u16(kvm_guest.IRQ_COUNT) == n
        assert vm.u16(kvm_guest.TX_AVAIL + 2) == n  # the guest published n avail entries


# duration is only the run's upper bound: each packet is a full round trip (vCPU → back-end → irqfd → vCPU), so
# under the load of parallel test runs on 2 CPUs a run of 2000 can take seconds instead of ~0.2 s.


def _run_kvm_irqfd(backend: str, n: int) -> dict[str, object]:
    """kvm-irqfd with ``n`` packets through ``backend``, checked: every kick and call in the guest's and the KVM
    tracepoints' counts, and ``n`` packets in the back-end's own counters, which are returned."""
    s = scenarios.run("kvm-irqfd", scenarios.RunOptions(duration=60, backend=backend, count=n))
    assert s["ok"], s["checks"]
    fe = s["frontend"]
    assert isinstance(fe, dict)
    assert fe["guest_kicks"] == n and fe["guest_irqs"] == n and fe["used_idx"] == n % 65536
    tp = s["kvm_tracepoints"]
    assert isinstance(tp, dict)
    # Every call was a real KVM injection (level-1 edge on the irqfd's GSI) and every kick a real guest PIO.
    # kvm_set_irq carries no VM id: another lab VM on this host using the same GSI would add to it, hence ≥.
    assert tp["set_irq"] >= n
    assert tp["pio"] == n  # filtered by this process (the vCPU thread's tgid) and the doorbell port
    assert tp["pic_set_irq"] >= n
    assert tp["vcpu_wakeup"] > 0
    st = s["backend_stats"]
    assert isinstance(st, dict)
    assert st["from_guest_packets"] == n
    return st


@pytest.mark.slow
def test_kvm_irqfd_through_the_reference_backend(no_leftovers: None) -> None:
    n = 2000
    st = _run_kvm_irqfd("vhtune", n)
    # The back-end's own counters agree with the guest's: one kick and one call per packet.
    assert st["kicks"] == n and st["calls"] == n


@pytest.mark.slow
def test_kvm_irqfd_through_dpdk_vhost(no_leftovers: None) -> None:
    _run_kvm_irqfd("dpdk", 2000)


@pytest.mark.slow
def test_record_runs_alongside_and_sees_the_injections(tmp_path: Path, no_leftovers: None) -> None:
    out = tmp_path / "rec"
    s = scenarios.run("kvm-irqfd", scenarios.RunOptions(duration=60, count=1000, record=out))
    assert s["ok"], s["checks"]
    rec = s["recording"]
    assert rec["exit_code"] == 0 and rec["attached_after_s"] is not None, rec
    import json

    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and man["rows"]["irqs"] > 0  # traffic started only after the probes attached
