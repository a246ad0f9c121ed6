"""Independent proof that the kvm-irqfd path is real: count kvm tracepoints with bpftrace during a run.

Tracepoint fields (this kernel's tracefs format files): kvm_set_irq {gsi, level, irq_source_id} (an irqfd
injection is level 1 then 0, from the eventfd writer's context or a kworker, no VM id); kvm_pic_set_irq {chip,
pin, elcr, imr, coalesced}; kvm_pio {rw, port, size, count, val} in the vCPU thread; kvm_vcpu_wakeup {ns,
waited, valid} in the vCPU thread when a halt ends. bpftrace is a separate process with its own BPF programs,
so counting does not touch tracefs state other tools may share.
"""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path

from vhtune.errors import CapabilityError
from vhtune.lab.names import lab_name, run_dir
from vhtune.lab.proc import LabProcess, wait_for


class KvmTrace:
    """``with KvmTrace(gsi, port, pid) as t: …``; then ``t.counts`` holds the per-tracepoint counts."""

    def __init__(self, gsi: int, port: int, pid: int, max_seconds: float = 120.0) -> None:
        if shutil.which("bpftrace") is None:
            raise CapabilityError("bpftrace is not installed", hint="run `make setup`")
        self.script = "\n".join(
            (
                f"tracepoint:kvm:kvm_set_irq /args->gsi == {gsi} && args->level == 1/ {{ @set_irq = count(); }}",
                f"tracepoint:kvm:kvm_pic_set_irq /args->chip == 0 && args->pin == {gsi}/ {{ @pic_set_irq = count(); }}",
                f"tracepoint:kvm:kvm_pio /pid == {pid} && args->rw == 1 && args->port == {port}/ {{ @pio = count(); }}",
                f"tracepoint:kvm:kvm_vcpu_wakeup /pid == {pid}/ {{ @vcpu_wakeup = count(); }}",
                # Bounded even if whoever started it dies without sending SIGINT.
                f"interval:s:{max(1, int(max_seconds))} {{ exit(); }}",
                'END { printf("VHL-END\\n"); }',
            )
        )
        self.log = run_dir() / f"{lab_name('b')}-bpftrace.log"
        self.proc: LabProcess | None = None
        self.counts: dict[str, int] = {}

    def __enter__(self) -> KvmTrace:
        self.proc = LabProcess(["bpftrace", "-e", self.script], log=self.log, name="bpftrace")
        try:
            wait_for(lambda: "Attaching" in self._text(), 20.0, "bpftrace to attach", self.proc)
        except BaseException:
            self.close()
            raise
        return self

    def _text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.alive():
            # SIGINT makes bpftrace run END and print its maps, then exit.
            self.proc.signal_group(signal.SIGINT)
            self.proc.wait(10.0)
        self.proc.stop(timeout=2.0)
        text = self._text()
        self.counts = {k: 0 for k in ("set_irq", "pic_set_irq", "pio", "vcpu_wakeup")}
        for name, n in re.findall(r"^@(\w+): (\d+)$", text, re.MULTILINE):
            self.counts[name] = int(n)
        Path(self.log).unlink(missing_ok=True)
        self.proc = None

    def __exit__(self, *exc: object) -> None:
        self.close()
