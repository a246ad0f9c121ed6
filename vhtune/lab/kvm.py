"""A tiny real KVM VM driven by ioctls from Python: one memory slot, one real-mode vCPU, the in-kernel irqchip,
PIO doorbells as ioeventfds and an interrupt line as an irqfd.

KVM API facts used (Documentation/virt/kvm/api.rst; ioctl numbers from include/uapi/linux/kvm.h, KVMIO 0xAE):
- KVM_CREATE_IRQCHIP before any vCPU: in-kernel PIC + IOAPIC + LAPIC with default GSI routing, GSI n < 16 → PIC
  pin n. On reset KVM puts the BSP's LAPIC LVT0 in ExtINT mode, so the master PIC's output reaches vCPU 0.
- KVM_IRQFD {fd, gsi}: a write to fd raises then lowers the GSI (kvm_set_irq level 1 then 0) in the context of
  the writer or a kworker: a back-end's "call" becomes an edge on PIC pin ``gsi``.
- KVM_IOEVENTFD {addr, len, fd, flags=PIO}: a guest ``out`` of ``len`` bytes to port ``addr`` signals fd inside
  the kernel, no exit to user space: a guest doorbell becomes a back-end's "kick".
- The vCPU halts in-kernel (irqchip): an injected interrupt wakes it (kvm_vcpu_wakeup).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import struct
import threading
from dataclasses import dataclass

from vhtune.errors import CapabilityError, LabError

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46  # _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region /* 32 */)
KVM_SET_TSS_ADDR = 0xAE47
KVM_CREATE_IRQCHIP = 0xAE60
KVM_IRQFD = 0x4020AE76  # _IOW(KVMIO, 0x76, struct kvm_irqfd /* 32 */)
KVM_IOEVENTFD = 0x4040AE79  # _IOW(KVMIO, 0x79, struct kvm_ioeventfd /* 64 */)
KVM_RUN = 0xAE80
KVM_GET_REGS = 0x8090AE81  # struct kvm_regs: 18 u64s
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83  # struct kvm_sregs: 312 bytes
KVM_SET_SREGS = 0x4138AE84

KVM_IOEVENTFD_FLAG_PIO = 1 << 1
KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2
KVM_IRQFD_FLAG_DEASSIGN = 1 << 0

EXIT_IO, EXIT_HLT, EXIT_MMIO, EXIT_SHUTDOWN, EXIT_FAIL_ENTRY, EXIT_INTR, EXIT_INTERNAL = 2, 5, 6, 8, 9, 10, 17
EXIT_NAMES = {2: "IO", 5: "HLT", 6: "MMIO", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR", 17: "INTERNAL_ERROR"}
# struct kvm_run: u32 exit_reason at 8; the exit union at 32; for KVM_EXIT_IO:
# u8 direction (1 = out), u8 size, u16 port, u32 count, u64 data_offset (from the start of kvm_run).
RUN_EXIT_REASON = 8
RUN_IO = 32
TSS_ADDR = 0xFFFBD000  # three pages below 4 GiB, outside guest RAM (needed for real mode on VMX hosts)


def _ioctl(fd: int, req: int, arg: int | bytes | bytearray = 0, what: str = "") -> int:
    try:
        if isinstance(arg, bytearray):  # filled in place by the kernel
            return int(fcntl.ioctl(fd, req, arg, True))
        if isinstance(arg, bytes):  # copied in; the call's own result is not needed
            fcntl.ioctl(fd, req, arg)
            return 0
        return int(fcntl.ioctl(fd, req, arg))
    except OSError as exc:
        raise LabError(f"KVM ioctl {what or hex(req)} failed: {exc.strerror}") from exc


def _ioctl_ulong(fd: int, req: int, arg: int, what: str) -> int:
    # fcntl.ioctl passes an integer argument as a C int; KVM_SET_TSS_ADDR takes an unsigned long above 2^31.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
    r = int(libc.ioctl(fd, req, arg))
    if r < 0:
        raise LabError(f"KVM ioctl {what} failed: {os.strerror(ctypes.get_errno())}")
    return r


@dataclass
class RunResult:
    exit_reason: str
    port: int | None
    runs: int  # KVM_RUN calls (each exit to user space is one)


class KvmVm:
    """One VM: guest RAM is a memfd (shareable with a vhost-user back-end), mapped at guest-physical 0."""

    def __init__(self, mem_size: int = 2 << 20) -> None:
        if not os.path.exists("/dev/kvm"):
            raise CapabilityError("/dev/kvm is missing", hint="load kvm_intel/kvm_amd or use a host with KVM")
        self._fds: list[int] = []
        self.mem_size = mem_size
        try:
            self.kvm = self._keep(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        except OSError as exc:
            raise CapabilityError(f"cannot open /dev/kvm: {exc.strerror}", hint="run as root") from exc
        try:
            api = _ioctl(self.kvm, KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
            if api != 12:
                raise CapabilityError(f"KVM API version {api} is not the stable 12")
            self.vm = self._keep(_ioctl(self.kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM"))
            with contextlib.suppress(LabError):  # AMD ignores it; Intel real mode without URG needs it
                _ioctl_ulong(self.vm, KVM_SET_TSS_ADDR, TSS_ADDR, "KVM_SET_TSS_ADDR")
            _ioctl(self.vm, KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP")
            self.memfd = self._keep(os.memfd_create("vhl-kvm-ram", os.MFD_CLOEXEC))
            os.ftruncate(self.memfd, mem_size)
            self.mem = mmap.mmap(self.memfd, mem_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._anchor = ctypes.c_char.from_buffer(self.mem)
            self.mem_addr = ctypes.addressof(self._anchor)
            region = struct.pack("<IIQQQ", 0, 0, 0, mem_size, self.mem_addr)
            _ioctl(self.vm, KVM_SET_USER_MEMORY_REGION, region, "KVM_SET_USER_MEMORY_REGION")
            self.vcpu = self._keep(_ioctl(self.vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU"))
            run_size = _ioctl(self.kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")
            self.run_map = mmap.mmap(self.vcpu, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            self.close()
            raise
        self.ioeventfds: list[tuple[int, int, int]] = []  # (port, len, fd)
        self.irqfds: list[tuple[int, int]] = []  # (gsi, fd)
        self.vcpu_tid: int | None = None

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    # --- wiring -----------------------------------------------------------------------------------------
    def ioeventfd(self, port: int, length: int = 1, fd: int | None = None) -> int:
        """An eventfd signalled by every guest ``out`` of ``length`` bytes to ``port`` (no exit to us)."""
        efd = fd if fd is not None else self._keep(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
        arg = struct.pack("<QQIiI36x", 0, port, length, efd, KVM_IOEVENTFD_FLAG_PIO)
        _ioctl(self.vm, KVM_IOEVENTFD, arg, "KVM_IOEVENTFD")
        self.ioeventfds.append((port, length, efd))
        return efd

    def irqfd(self, gsi: int, fd: int | None = None) -> int:
        """An eventfd whose every write injects an edge on ``gsi`` (in-kernel PIC pin ``gsi`` for gsi < 16)."""
        efd = fd if fd is not None else self._keep(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
        _ioctl(self.vm, KVM_IRQFD, struct.pack("<IIII16x", efd, gsi, 0, 0), "KVM_IRQFD")
        self.irqfds.append((gsi, efd))
        return efd

    # --- guest state ------------------------------------------------------------------------------------
    def load(self, addr: int, code: bytes) -> None:
        self.mem[addr : addr + len(code)] = code

    def u16(self, addr: int) -> int:
        return int(struct.unpack_from("<H", self.mem, addr)[0])

    def set_u16(self, addr: int, value: int) -> None:
        struct.pack_into("<H", self.mem, addr, value & 0xFFFF)

    def reset_real_mode(self, rip: int, rsp: int) -> None:
        """CS:IP = 0:rip, flat 16-bit segments at base 0 (real mode, IF clear)."""
        sregs = bytearray(312)
        _ioctl(self.vcpu, KVM_GET_SREGS, sregs, "KVM_GET_SREGS")
        # struct kvm_segment (24 bytes): u64 base, u32 limit, u16 selector, u8 type, present, dpl, db, s, l, g…
        for i in range(6):  # cs, ds, es, fs, gs, ss
            struct.pack_into("<QIH", sregs, i * 24, 0, 0xFFFF, 0)
        _ioctl(self.vcpu, KVM_SET_SREGS, bytes(sregs), "KVM_SET_SREGS")
        regs = [0] * 18  # rax rbx rcx rdx rsi rdi rsp rbp r8-r15 rip rflags
        regs[6], regs[16], regs[17] = rsp, rip, 0x2
        _ioctl(self.vcpu, KVM_SET_REGS, struct.pack("<18Q", *regs), "KVM_SET_REGS")

    def rip(self) -> int:
        regs = bytearray(144)
        _ioctl(self.vcpu, KVM_GET_REGS, regs, "KVM_GET_REGS")
        return int(struct.unpack_from("<Q", regs, 16 * 8)[0])

    def run_until_port(self, ports: set[int], max_runs: int = 1000) -> RunResult:
        """KVM_RUN until an ``out`` to one of ``ports`` (not an ioeventfd) exits to user space."""
        self.vcpu_tid = threading.get_native_id()
        for n in range(1, max_runs + 1):
            try:
                fcntl.ioctl(self.vcpu, KVM_RUN, 0)
            except InterruptedError:
                continue
            except OSError as exc:
                raise LabError(f"KVM_RUN failed: {exc.strerror}") from exc
            reason = struct.unpack_from("<I", self.run_map, RUN_EXIT_REASON)[0]
            if reason == EXIT_IO:
                _direction, _size, port = struct.unpack_from("<BBH", self.run_map, RUN_IO)
                if port in ports:
                    return RunResult("IO", port, n)
                continue  # other port I/O (e.g. PIC set-up is in-kernel; anything else is ignored)
            if reason == EXIT_INTR:
                continue
            name = EXIT_NAMES.get(reason, str(reason))
            raise LabError(f"the KVM vCPU stopped with exit {name} at rip {self.rip():#x}")
        raise LabError(f"the KVM vCPU did not reach its done port within {max_runs} exits")

    def close(self) -> None:
        for port, length, efd in getattr(self, "ioeventfds", []):
            arg = struct.pack("<QQIiI36x", 0, port, length, efd, KVM_IOEVENTFD_FLAG_PIO | KVM_IOEVENTFD_FLAG_DEASSIGN)
            with contextlib.suppress(LabError):
                _ioctl(self.vm, KVM_IOEVENTFD, arg)
        for gsi, efd in getattr(self, "irqfds", []):
            with contextlib.suppress(LabError):
                _ioctl(self.vm, KVM_IRQFD, struct.pack("<IIII16x", efd, gsi, KVM_IRQFD_FLAG_DEASSIGN, 0))
        if hasattr(self, "run_map"):
            self.run_map.close()
        if hasattr(self, "_anchor"):
            del self._anchor  # the exported buffer pins the mmap until released
        if hasattr(self, "mem"):
            self.mem.close()
        for fd in reversed(self._fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def __enter__(self) -> KvmVm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
