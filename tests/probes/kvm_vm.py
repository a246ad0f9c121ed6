"""The smallest KVM VM that makes irqfd injections happen: a VM with the in-kernel irqchip, one vCPU (never
run) and one irqfd. Run as a child process by the tests so that its writes are a process we control.

argv: ``pic`` (irqfd on GSI 7: PIC/IOAPIC pin, injected from a kworker; not the lab's 5) or ``msi`` (a
routing table with one MSI entry, GSI 24 → vector 0x31: injected inside the eventfd write). Prints "PID FD", waits for a
line on stdin, writes the eventfd N times 1 ms apart (each write one injection), prints "done".
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import time

# ioctl numbers from include/uapi/linux/kvm.h (_IO/_IOW(KVMIO=0xAE, nr, size)).
KVM_CREATE_VM = 0xAE01
KVM_CREATE_VCPU = 0xAE41
KVM_CREATE_IRQCHIP = 0xAE60
KVM_SET_GSI_ROUTING = 0x4008AE6A  # struct kvm_irq_routing header: u32 nr, u32 flags
KVM_IRQFD = 0x4020AE76  # struct kvm_irqfd: u32 fd, u32 gsi, u32 flags, u32 resamplefd, u8 pad[16]
KVM_IRQ_ROUTING_MSI = 2
MSI_VECTOR = 0x31


def main() -> None:
    mode, count = sys.argv[1], int(sys.argv[2])
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    fcntl.ioctl(vm, KVM_CREATE_IRQCHIP, 0)
    fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)  # the LAPIC an MSI is delivered to
    gsi = 7
    if mode == "msi":
        gsi = 24
        # struct kvm_irq_routing_entry: u32 gsi, type, flags, pad; union { msi: u32 address_lo, address_hi,
        # data, devid; pad[8] }. 0xfee00000: APIC id 0, fixed delivery.
        entry = struct.pack("<IIII", gsi, KVM_IRQ_ROUTING_MSI, 0, 0) + struct.pack("<III20x", 0xFEE00000, 0, MSI_VECTOR)
        fcntl.ioctl(vm, KVM_SET_GSI_ROUTING, struct.pack("<II", 1, 0) + entry)
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    fcntl.ioctl(vm, KVM_IRQFD, struct.pack("<IIII16x", efd, gsi, 0, 0))
    print(os.getpid(), efd, flush=True)
    sys.stdin.readline()
    for _ in range(count):
        os.eventfd_write(efd, 1)
        time.sleep(0.001)  # let each PIC injection's work item run before the next write
    print("done", flush=True)


if __name__ == "__main__":
    main()
