"""Which probe mechanisms work on this kernel, found by loading and attaching, never by guessing.

One tiny bcc module holds a no-op program per program type; each family's representative tracepoint is
attached and detached again. fentry (BPF_PROG_TYPE_TRACING) autoloads at construction in bcc, so it gets a
module of its own. The result decides the probe variant the recorder uses: fentry > kprobe > tracepoint for the
vhost-net internals (handle_tx/handle_rx, vhost_signal, tun_sendmsg), tracepoints for everything else.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from vhtune.env.bccload import captured_stderr, import_bcc, last_line
from vhtune.env.tracefs import tracefs_root, tracepoint_exists
from vhtune.errors import CapabilityError

OK, MISSING, UNSUPPORTED, NOT_TESTED = "ok", "missing", "unsupported", "not-tested"

# One representative tracepoint per family the recorder uses (see probes/).
FAMILY_TRACEPOINTS: dict[str, tuple[str, str]] = {
    "sched": ("sched", "sched_switch"),
    "net": ("net", "net_dev_xmit"),
    "skb": ("skb", "kfree_skb"),
    "kvm": ("kvm", "kvm_set_irq"),
    "syscalls": ("syscalls", "sys_enter_write"),
}
FAMILY_FIX = {
    "kvm": "load the kvm module (modprobe kvm_intel or kvm_amd); kvm tracepoints exist only while it is loaded",
    "syscalls": "the kernel needs CONFIG_FTRACE_SYSCALLS for syscalls:* tracepoints",
}
KPROBE_TARGET = "vfs_write"  # always present and traceable where kprobes work at all

_TEST_PROGRAMS = """
int vh_tp(void *ctx) { return 0; }
int vh_raw(void *ctx) { return 0; }
int vh_kprobe(struct pt_regs *ctx) { return 0; }
"""
_FENTRY_PROGRAM = "KFUNC_PROBE(vfs_write) { return 0; }"


@dataclass
class Mechanism:
    name: str
    status: str
    detail: str = ""
    fix: str = ""


@dataclass
class Capabilities:
    mechanisms: dict[str, Mechanism] = field(default_factory=dict)
    compile_error: str | None = None
    elapsed_s: float = 0.0

    def works(self, name: str) -> bool:
        m = self.mechanisms.get(name)
        return m is not None and m.status == OK

    @property
    def vhost_internals_variant(self) -> str:
        """Probe variant for vhost-net/tun internals: the best mechanism that loaded."""
        if self.works("fentry"):
            return "fentry"
        if self.works("kprobe"):
            return "kprobe"
        return "tracepoint"

    def as_dict(self) -> dict[str, object]:
        return {
            "mechanisms": {k: vars(v) for k, v in self.mechanisms.items()},
            "compile_error": self.compile_error,
            "vhost_internals_variant": self.vhost_internals_variant,
        }


def _kprobe_reason() -> str:
    has_pmu = Path("/sys/bus/event_source/devices/kprobe/type").exists()
    root = tracefs_root()
    has_events = root is not None and (root / "kprobe_events").exists()
    if not has_pmu and not has_events:
        return "no kprobe PMU and no tracefs kprobe_events: kernel built without kprobe events"
    return f"{KPROBE_TARGET} could not be kprobed"


def detect() -> Capabilities:
    """Load-test every mechanism. Needs root; raises CapabilityError only when bcc itself is unusable."""
    start = time.monotonic()
    caps = Capabilities()
    bcc = import_bcc()
    if os.geteuid() != 0:
        raise CapabilityError("loading BPF programs needs root", "run vhtune doctor as root")
    troot = tracefs_root()
    try:
        with captured_stderr() as err:
            mod = bcc.BPF(text=_TEST_PROGRAMS)
    except Exception as exc:  # bcc raises bare Exception on compile failure
        caps.compile_error = last_line(err.text) or str(exc)
        caps.elapsed_s = time.monotonic() - start
        return caps
    try:
        for family, (cat, name) in FAMILY_TRACEPOINTS.items():
            key = f"tracepoint:{family}"
            if troot is None:
                caps.mechanisms[key] = Mechanism(key, NOT_TESTED, "tracefs not mounted")
                continue
            if not tracepoint_exists(cat, name, troot):
                caps.mechanisms[key] = Mechanism(
                    key, MISSING, f"{cat}:{name} not in tracefs", FAMILY_FIX.get(family, "")
                )
                continue
            tp = f"{cat}:{name}"
            try:
                with captured_stderr() as err:
                    mod.attach_tracepoint(tp=tp, fn_name="vh_tp")
                mod.detach_tracepoint(tp)
                caps.mechanisms[key] = Mechanism(key, OK, f"attached to {tp}")
            except Exception as exc:
                caps.mechanisms[key] = Mechanism(key, UNSUPPORTED, last_line(err.text) or str(exc))
        try:
            with captured_stderr() as err:
                mod.attach_raw_tracepoint(tp="sched_switch", fn_name="vh_raw")
            mod.detach_raw_tracepoint(tp="sched_switch")
            caps.mechanisms["raw_tracepoint"] = Mechanism("raw_tracepoint", OK, "attached to sched_switch")
        except Exception as exc:
            caps.mechanisms["raw_tracepoint"] = Mechanism(
                "raw_tracepoint", UNSUPPORTED, last_line(err.text) or str(exc)
            )
        try:
            with captured_stderr() as err:
                mod.attach_kprobe(event=KPROBE_TARGET, fn_name="vh_kprobe")
            mod.detach_kprobe(event=KPROBE_TARGET)
            caps.mechanisms["kprobe"] = Mechanism("kprobe", OK, f"attached to {KPROBE_TARGET}")
        except Exception:
            caps.mechanisms["kprobe"] = Mechanism(
                "kprobe", UNSUPPORTED, _kprobe_reason(), "optional: vhtune falls back to tracepoints"
            )
        try:
            with captured_stderr() as err:
                mod.attach_uprobe(name="c", sym="getpid", fn_name="vh_kprobe")
            mod.detach_uprobe(name="c", sym="getpid")
            caps.mechanisms["uprobe"] = Mechanism("uprobe", OK, "attached to libc getpid")
        except Exception as exc:
            caps.mechanisms["uprobe"] = Mechanism("uprobe", UNSUPPORTED, last_line(err.text) or str(exc))
    finally:
        mod.cleanup()
    caps.mechanisms["fentry"] = _fentry(bcc)
    caps.elapsed_s = time.monotonic() - start
    return caps


def _fentry(bcc: object) -> Mechanism:
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return Mechanism("fentry", UNSUPPORTED, "no kernel BTF", "optional: vhtune falls back to tracepoints")
    try:
        with captured_stderr() as err:
            mod = bcc.BPF(text=_FENTRY_PROGRAM)  # type: ignore[attr-defined]
    except Exception as exc:
        # bcc maps EPERM from BPF_PROG_LOAD to "Need super-user privileges" even when running as root: the
        # kernel refused BPF_PROG_TYPE_TRACING (lockdown, or no trampoline support on this arch/hypervisor).
        why = last_line(err.text) or str(exc)
        return Mechanism(
            "fentry",
            UNSUPPORTED,
            f"BPF_PROG_TYPE_TRACING load refused: {why}",
            "optional: vhtune falls back to tracepoints",
        )
    mod.cleanup()
    return Mechanism("fentry", OK, f"attached to {KPROBE_TARGET}")
