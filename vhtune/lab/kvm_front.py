"""The ``kvm-irqfd`` front-end: the tiny KVM VM wired to a vhost-user back-end.

The VM's memfd is the device memory (SET_MEM_TABLE); its TX doorbell ioeventfd is the TX ring's kick fd; its
irqfd (PIC IRQ ``irq``) is the TX ring's call fd. So each packet costs one real guest ``out`` (a kick the
back-end reads from the eventfd) and one real KVM interrupt injection (kvm_set_irq on the irqfd's GSI,
kvm_pic_set_irq, kvm_vcpu_wakeup of the halted vCPU). The RX ring (queue 0) is set up with plain eventfds and
no buffers: this front-end only transmits.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vhtune.errors import LabError, UsageError
from vhtune.lab import kvm_guest as g
from vhtune.lab.kvm import KvmVm, RunResult
from vhtune.lab.vufront import Ring, VhostUserFrontend

NET_HDR_LEN = 12  # struct virtio_net_hdr_mrg_rxbuf: VIRTIO_F_VERSION_1 always uses the 12-byte header
BUF_STRIDE = 2048


@dataclass
class KvmIrqfdResult:
    requested: int
    guest_kicks: int  # doorbell writes the guest made (its own counter)
    guest_irqs: int  # interrupts its handler ran
    used_idx: int  # TX used.idx the back-end published
    avail_idx: int  # TX avail.idx the guest published
    seconds: float
    timed_out: bool
    watchdog_irqs: int  # interrupts the watchdog injected itself to end a stuck run
    vcpu_tid: int | None
    gsi: int
    doorbell_port: int


def frame(seq: int, size: int) -> bytes:
    """An Ethernet frame of ``size`` bytes (no FCS): locally administered MACs, ethertype 0x88B5 (local
    experimental), a sequence number."""
    body = bytes.fromhex("02000000000102000000000288b5") + struct.pack(">I", seq)
    return body + bytes(size - len(body))


class KvmIrqfdFrontend:
    def __init__(self, socket_path: Path, count: int, size: int = 64, layout: g.GuestLayout | None = None) -> None:
        if not 1 <= count <= 65535:
            raise UsageError(f"kvm-irqfd packet count {count} is out of range", hint="use 1..65535 (u16 counters)")
        if not 60 <= size <= BUF_STRIDE - NET_HDR_LEN:
            raise UsageError(f"kvm-irqfd frame size {size} is out of range", hint="use 60..2036")
        self.socket_path = socket_path
        self.count = count
        self.size = size
        self.lay = layout or g.GuestLayout()
        self.lay.validate()
        self.vcpu_started = threading.Event()
        self.vcpu_tid: int | None = None

    def _build(self, vm: KvmVm) -> None:
        lay = self.lay
        for i in range(lay.num):
            gpa = g.BUFS + i * BUF_STRIDE
            vm.load(gpa, bytes(NET_HDR_LEN) + frame(i, self.size))
            # struct vring_desc: u64 addr (guest-physical), u32 len, u16 flags (0: device reads), u16 next
            vm.load(g.TX_DESC + 16 * i, struct.pack("<QIHH", gpa, NET_HDR_LEN + self.size, 0, 0))
        vm.load(g.CODE, g.main_code(lay))
        vm.load(g.HANDLER, g.handler_code())
        addr, entry = g.ivt_entry(lay)
        vm.load(addr, entry)
        vm.set_u16(g.TARGET, self.count)
        vm.reset_real_mode(g.CODE, g.STACK_TOP)

    def run(self, timeout: float) -> KvmIrqfdResult:
        lay = self.lay
        with KvmVm() as vm, contextlib.ExitStack() as stack:
            kick = vm.ioeventfd(lay.doorbell_port, 1)
            call = vm.irqfd(lay.irq)
            rx_kick = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            stack.callback(os.close, rx_kick)
            rx_call = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            stack.callback(os.close, rx_call)
            self._build(vm)
            vu = stack.enter_context(VhostUserFrontend(self.socket_path))
            vu.negotiate()
            vu.set_mem_table(vm.memfd, vm.mem_size, vm.mem_addr)
            vu.add_ring(Ring(0, lay.num, g.RX_DESC, g.RX_AVAIL, g.RX_USED, rx_kick, rx_call), vm.mem_addr)
            vu.add_ring(Ring(1, lay.num, g.TX_DESC, g.TX_AVAIL, g.TX_USED, kick, call), vm.mem_addr)
            vu.enable()
            time.sleep(0.05)  # the back-end starts its ring workers on ENABLE; a kick before is still counted
            result: list[RunResult] = []
            errors: list[BaseException] = []

            def vcpu() -> None:
                self.vcpu_tid = threading.get_native_id()
                self.vcpu_started.set()
                try:
                    result.append(vm.run_until_port({lay.done_port}, max_runs=100_000))
                except BaseException as exc:
                    errors.append(exc)

            t0 = time.monotonic()
            th = threading.Thread(target=vcpu, name="vhl-kvm-vcpu", daemon=True)
            th.start()
            th.join(timeout)
            watchdog = 0
            timed_out = th.is_alive()
            if timed_out:
                # The vCPU waits in HLT for a call that does not come: set the stop flag and inject the
                # interrupt ourselves so the guest leaves through its done port.
                vm.set_u16(g.STOP, 1)
                os.eventfd_write(call, 1)
                watchdog = 1
                th.join(5.0)
                if th.is_alive():
                    raise LabError("the KVM vCPU did not stop after its watchdog interrupt")
            secs = time.monotonic() - t0
            if errors:
                raise errors[0]
            used = vm.u16(g.TX_USED + 2)
            res = KvmIrqfdResult(
                requested=self.count,
                guest_kicks=vm.u16(g.KICKS),
                guest_irqs=vm.u16(g.IRQ_COUNT),
                used_idx=used,
                avail_idx=vm.u16(g.TX_AVAIL + 2),
                seconds=round(secs, 4),
                timed_out=timed_out,
                watchdog_irqs=watchdog,
                vcpu_tid=self.vcpu_tid,
                gsi=lay.irq,
                doorbell_port=lay.doorbell_port,
            )
            with contextlib.suppress(LabError):
                vu.stop()
            return res
