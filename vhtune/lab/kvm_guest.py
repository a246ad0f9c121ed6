"""The kvm-irqfd guest: 16-bit real-mode machine code, hand-encoded, that drives a virtio TX ring.

Memory map (guest-physical = offset in the memfd; all code and rings below 64 KiB so segment 0 reaches them):
``VARS`` counters, ``CODE`` main loop, ``HANDLER`` the interrupt handler, the TX/RX split rings, packet buffers
from ``BUFS``. Per packet the guest writes one avail entry (its descriptors were pre-built by the front-end),
publishes avail.idx, ``out``s to the TX doorbell port (an ioeventfd = the back-end's kick fd), then ``sti; hlt``
until the back-end's call (irqfd → PIC IRQ ``irq``) runs the handler, which counts and EOIs. ``sti; hlt`` is
race-free: STI's one-instruction interrupt shadow delivers a pending interrupt only once HLT has started.
After ``count`` packets (or when the stop flag is set) it ``out``s to the done port, which exits to user space.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vhtune.errors import UsageError

VARS = 0x0F00
IRQ_COUNT = VARS + 0  # u16: interrupts the handler ran
STOP = VARS + 2  # u16: non-zero → leave the loop
KICKS = VARS + 4  # u16: doorbell writes done
TARGET = VARS + 6  # u16: packets to send
STACK_TOP = 0x0E00
CODE = 0x1000
HANDLER = 0x1100
TX_DESC, TX_AVAIL, TX_USED = 0x2000, 0x3000, 0x4000
RX_DESC, RX_AVAIL, RX_USED = 0x5000, 0x6000, 0x7000
BUFS = 0x10000
PIC1_CMD, PIC1_DATA = 0x20, 0x21
PIC_VECTOR_BASE = 0x20


@dataclass(frozen=True)
class GuestLayout:
    num: int = 256
    irq: int = 5
    doorbell_port: int = 0x510
    done_port: int = 0x5F0

    def validate(self) -> None:
        if self.num not in (16, 32, 64, 128, 256):
            raise UsageError(f"ring size {self.num} must be a power of two, 16..256 (one 4 KiB page of descriptors)")
        if not 0 <= self.irq < 8 or self.irq == 2:
            raise UsageError(f"IRQ {self.irq} must be a master-PIC line 0..7 other than the cascade (2)")


class _Asm:
    """Just enough of an assembler: raw bytes, labels, and 8-bit relative jump fix-ups."""

    def __init__(self, origin: int) -> None:
        self.origin = origin
        self.out = bytearray()
        self.labels: dict[str, int] = {}
        self.fix: list[tuple[int, str]] = []

    def b(self, *data: int) -> None:
        self.out += bytes(data)

    def w(self, v: int) -> None:
        self.out += struct.pack("<H", v & 0xFFFF)

    def label(self, name: str) -> None:
        self.labels[name] = len(self.out)

    def jcc8(self, opcode: int, target: str) -> None:
        self.b(opcode, 0)
        self.fix.append((len(self.out) - 1, target))

    def bytes(self) -> bytes:
        for at, target in self.fix:
            rel = self.labels[target] - (at + 1)
            if not -128 <= rel <= 127:
                raise ValueError(f"jump to {target} out of rel8 range ({rel})")
            self.out[at] = rel & 0xFF
        return bytes(self.out)


def main_code(lay: GuestLayout) -> bytes:
    a = _Asm(CODE)
    a.b(0xFA)  # cli
    a.b(0x31, 0xC0)  # xor ax, ax
    a.b(0x8E, 0xD8)  # mov ds, ax
    a.b(0x8E, 0xD0)  # mov ss, ax
    a.b(0xBC)  # mov sp, imm16
    a.w(STACK_TOP)
    # 8259A master: ICW1 (edge, cascade, ICW4 needed), ICW2 vector base, ICW3 slave on IR2, ICW4 8086 mode,
    # then OCW1: unmask only our line.
    for port, val in ((PIC1_CMD, 0x11), (PIC1_DATA, PIC_VECTOR_BASE), (PIC1_DATA, 0x04), (PIC1_DATA, 0x01)):
        a.b(0xB0, val, 0xE6, port)  # mov al, val ; out port, al
    a.b(0xB0, ~(1 << lay.irq) & 0xFF, 0xE6, PIC1_DATA)
    a.label("loop")
    a.b(0x83, 0x3E)  # cmp word [STOP], 0
    a.w(STOP)
    a.b(0x00)
    a.jcc8(0x75, "done")  # jne done
    a.b(0x8B, 0x3E)  # mov di, [IRQ_COUNT]   (count before this kick)
    a.w(IRQ_COUNT)
    a.b(0xA1)  # mov ax, [avail.idx]
    a.w(TX_AVAIL + 2)
    a.b(0x89, 0xC6)  # mov si, ax
    a.b(0x81, 0xE6)  # and si, num-1         (ring slot)
    a.w(lay.num - 1)
    a.b(0x89, 0xF3)  # mov bx, si            (descriptor id = slot: pre-built one per slot)
    a.b(0xD1, 0xE6)  # shl si, 1
    a.b(0x89, 0x9C)  # mov [si + avail.ring], bx
    a.w(TX_AVAIL + 4)
    a.b(0x40)  # inc ax
    a.b(0xA3)  # mov [avail.idx], ax     (x86 stores are ordered: the entry is visible first)
    a.w(TX_AVAIL + 2)
    a.b(0xBA)  # mov dx, doorbell
    a.w(lay.doorbell_port)
    a.b(0xEE)  # out dx, al              → ioeventfd → the back-end's kick
    a.b(0xFF, 0x06)  # inc word [KICKS]
    a.w(KICKS)
    a.label("wait")
    a.b(0xFB, 0xF4, 0xFA)  # sti ; hlt ; cli   (woken by the irqfd interrupt)
    a.b(0x83, 0x3E)  # cmp word [STOP], 0
    a.w(STOP)
    a.b(0x00)
    a.jcc8(0x75, "done")
    a.b(0x39, 0x3E)  # cmp [IRQ_COUNT], di
    a.w(IRQ_COUNT)
    a.jcc8(0x74, "wait")  # je wait: no new interrupt yet
    a.b(0xA1)  # mov ax, [KICKS]
    a.w(KICKS)
    a.b(0x3B, 0x06)  # cmp ax, [TARGET]
    a.w(TARGET)
    a.jcc8(0x72, "loop")  # jb loop
    a.label("done")
    a.b(0xBA)  # mov dx, done port
    a.w(lay.done_port)
    a.b(0xEE)  # out dx, al   → KVM_EXIT_IO to user space
    a.b(0xF4)  # hlt (not resumed)
    a.jcc8(0xEB, "done")
    return a.bytes()


def handler_code() -> bytes:
    a = _Asm(HANDLER)
    a.b(0x50)  # push ax
    a.b(0xFF, 0x06)  # inc word [IRQ_COUNT]
    a.w(IRQ_COUNT)
    a.b(0xB0, 0x20, 0xE6, PIC1_CMD)  # mov al, 0x20 ; out 0x20, al   (non-specific EOI)
    a.b(0x58)  # pop ax
    a.b(0xCF)  # iret
    return a.bytes()


def ivt_entry(lay: GuestLayout) -> tuple[int, bytes]:
    """(address, bytes) of the real-mode IVT entry for our PIC vector: offset, segment."""
    vector = PIC_VECTOR_BASE + lay.irq
    return vector * 4, struct.pack("<HH", HANDLER, 0)
