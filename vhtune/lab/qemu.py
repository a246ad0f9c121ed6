"""The ``qemu-guest`` front-end: QEMU 7.2 TCG booting the lab image on a vhost-user virtio-net device.

Facts it relies on (VHOST_USER.md, MACHINE.md): guest RAM must be shareable with the back-end, so it is a
``memory-backend-memfd,share=on`` bound to the NUMA node; ``vectors=0`` on virtio-net-pci (MSI-X + TCG +
vhost-user crashes QEMU 7.2 here: the guest uses INTx); ``-name X,debug-threads=on`` names the vCPU threads
``CPU 0/TCG``; the ELF vmlinux boots through PVH with ``-kernel``; ``panic=-1`` + ``-no-reboot`` turn a guest
panic into a QEMU exit. TCG's translation cache defaults to 1 GiB, the bulk of a guest's ~1.1 GiB footprint:
``tb-size`` caps it.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from vhtune.errors import CapabilityError, LabError, UsageError
from vhtune.lab.guestinit import Workload, parse_result, ready_uptime
from vhtune.lab.image import GuestImage
from vhtune.lab.names import lab_name, run_dir
from vhtune.lab.proc import LabProcess

QEMU = "qemu-system-x86_64"


@dataclass
class GuestConfig:
    image: GuestImage
    socket: Path
    workload: Workload = field(default_factory=Workload)
    queues: int = 1
    mem_mb: int = 512
    tb_mb: int = 256
    mac: str = "02:00:00:00:00:02"
    name: str = ""
    vcpu_cpu: int | None = None  # pin the whole QEMU process (vCPU thread included) to this CPU
    extra_append: str = ""

    def validate(self) -> None:
        if not 1 <= self.queues <= 8:
            raise UsageError(f"guest queues={self.queues} is out of range", hint="use 1..8")
        if not 128 <= self.mem_mb <= 4096:
            raise UsageError(f"guest memory {self.mem_mb} MiB is out of range", hint="use 128..4096")
        ncpu = os.cpu_count() or 1
        if self.vcpu_cpu is not None and not 0 <= self.vcpu_cpu < ncpu:
            raise UsageError(f"CPU {self.vcpu_cpu} does not exist (this host has {ncpu})")

    def argv(self, console: Path) -> list[str]:
        self.validate()
        name = self.name or lab_name("q")
        append = f"console=ttyS0 quiet panic=-1 {self.workload.cmdline()} {self.extra_append}".strip()
        net = f"vhost-user,id=n0,chardev=c0,queues={self.queues}"
        dev = f"virtio-net-pci,netdev=n0,romfile=,vectors=0,mac={self.mac}"
        if self.queues > 1:
            dev += ",mq=on"
        argv = [
            QEMU,
            "-accel", f"tcg,tb-size={self.tb_mb}",
            "-cpu", "max",
            "-smp", "1",
            "-m", f"{self.mem_mb}M",
            "-nodefaults", "-display", "none", "-no-reboot",
            "-name", f"{name},debug-threads=on",
            "-kernel", str(self.image.kernel),
            "-initrd", str(self.image.initrd),
            "-append", append,
            "-object", f"memory-backend-memfd,id=mem,size={self.mem_mb}M,share=on",
            "-numa", "node,memdev=mem",
            "-chardev", f"socket,id=c0,path={self.socket}",
            "-netdev", net,
            "-device", dev,
            "-serial", f"file:{console}",
        ]  # fmt: skip
        if self.vcpu_cpu is not None:
            argv = ["taskset", "-c", str(self.vcpu_cpu), *argv]
        return argv


@dataclass
class GuestResult:
    result: dict[str, object]
    ready_s: float | None  # guest uptime when its network came up
    wall_s: float  # launch → QEMU exit
    exit_code: int | None
    console_tail: str


class QemuGuest:
    """One guest run; ``with QemuGuest(cfg) as g: res = g.wait()`` — QEMU is always gone afterwards."""

    def __init__(self, cfg: GuestConfig, console: Path | None = None) -> None:
        self.cfg = cfg
        self._own_console = console is None
        self.console = console or run_dir() / f"{lab_name('c')}-console.log"
        self.log = self.console.with_name(self.console.name.replace("console", "qemu"))
        self.proc: LabProcess | None = None
        self.t0 = 0.0
        self.console_text = ""

    def launch(self) -> QemuGuest:
        if shutil.which(QEMU) is None:
            raise CapabilityError(f"{QEMU} is not installed", hint="run `make setup` (qemu-system-x86)")
        if not self.cfg.socket.exists():
            raise LabError(f"no vhost-user back-end listens on {self.cfg.socket}")
        argv = self.cfg.argv(self.console)
        self.console.unlink(missing_ok=True)
        self.t0 = time.monotonic()
        self.proc = LabProcess(argv, log=self.log, name="qemu")
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise LabError("the guest is not running")
        return self.proc.pid

    def vcpu_tids(self) -> list[int]:
        """Thread ids of the vCPU threads (named ``CPU n/TCG`` thanks to debug-threads=on)."""
        if self.proc is None:
            return []
        qpid = self._qemu_pid()
        out = []
        for t in Path(f"/proc/{qpid}/task").glob("*"):
            try:
                if (t / "comm").read_text().startswith("CPU "):
                    out.append(int(t.name))
            except OSError:
                continue
        return sorted(out)

    def _qemu_pid(self) -> int:
        # Under taskset the leader execs QEMU, so the pid is the same process either way.
        return self.pid

    def read_console(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait(self, timeout: float | None = None) -> GuestResult:
        """Until the guest powers off; parses its result line. Kills QEMU after ``timeout``."""
        if self.proc is None:
            raise LabError("the guest was not launched")
        limit = timeout if timeout is not None else self.cfg.workload.duration + 60.0
        rc = self.proc.wait(limit)
        wall = time.monotonic() - self.t0
        if rc is None:
            self.stop()
            raise LabError(f"the guest did not power off within {limit:g} s (console: {self._tail()})")
        text = self.read_console()
        self.console_text = text
        if rc != 0:
            raise LabError(f"QEMU exited with code {rc}: {self.proc.tail(3)}")
        return GuestResult(parse_result(text), ready_uptime(text), wall, rc, self._tail())

    def _tail(self) -> str:
        return " | ".join(self.read_console().strip().splitlines()[-3:])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=5.0)
            self.console_text = self.console_text or self.read_console()
        if self._own_console:
            self.console.unlink(missing_ok=True)
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> QemuGuest:
        return self.launch()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
