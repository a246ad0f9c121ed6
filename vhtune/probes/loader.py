"""Compile and attach the vhtune probes: one bcc module per run, families chosen by what this kernel has.

Each family is attached only when all its tracepoints exist in tracefs; a missing family is reported (not
fatal) so a recording still says what it could see. The vhost kprobe variant is tried only where kprobes
exist and the vhost functions are in kallsyms; any failure falls back to the tracepoint-only module, and
``Probes.variants`` says which one ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vhtune.errors import CapabilityError, ProbeError
from vhtune.probes.layouts import check_layouts

TRACEFS = Path("/sys/kernel/tracing")
PROBES_DIR_ENV = "VHTUNE_PROBES_DIR"

# family → (source files, space-separated, in order; tracepoints it attaches to; maps it defines)
FAMILIES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "sched": (
        "sched.bpf.c",
        ("sched/sched_switch", "sched/sched_wakeup", "sched/sched_wakeup_new", "sched/sched_migrate_task"),
        ("targets", "thread_stats", "thread_ts", "runq_hist", "cpu_wait", "competitors", "tid_filter"),
    ),
    "net": (
        "taps.bpf.c net.bpf.c",
        ("net/netif_receive_skb", "net/net_dev_queue", "net/net_dev_xmit", "skb/kfree_skb", "skb/consume_skb"),
        ("taps", "tap_dir", "tap_stats", "skb_owner", "drops", "ifname_len_filter"),
    ),
    "notify": (
        "notify.bpf.c",
        ("syscalls/sys_enter_write", "syscalls/sys_enter_read"),
        ("notify_fds", "fd_direct", "notify_stats", "tgid_filter", "pending"),
    ),
    "kvm": (
        "kvm.bpf.c",
        ("kvm/kvm_set_irq", "kvm/kvm_msi_set_irq", "kvm/kvm_vcpu_wakeup"),
        ("irqs", "wakes"),
    ),
}
# The net family's counters variant: packets and bytes from the taps' own counters (vhtune/probes/netdev.py),
# drops from a raw tracepoint on kfree_skb ("raw:" entries name raw tracepoints by their tracefs event).
NET_COUNTERS = (
    "taps.bpf.c net_counters.bpf.c",
    ("raw:skb/kfree_skb",),
    ("taps", "tap_dir", "tap_gen", "dev_cache", "drops"),
)
# Families attached only while they have targets (kvm events are rare and carry no target key).
LAZY_FAMILIES = ("sched", "net", "notify")
# kprobe targets of the optional vhost variant: BPF function → kernel symbols to try, in order.
VHOST_KPROBES: dict[str, tuple[str, ...]] = {
    "vht_kp_vhost_signal": ("vhost_signal", "vhost_vq_signal"),
    "vht_kp_handle_tx_kick": ("handle_tx_kick",),
    "vht_kp_handle_rx_kick": ("handle_rx_kick",),
    "vht_kp_tun_sendmsg": ("tun_sendmsg",),
    "vht_kp_tun_recvmsg": ("tun_recvmsg",),
}


PACKAGED_PROBES = Path("/usr/share/vhtune/probes")  # where a .deb puts probes/*.c and *.h


def probes_dir() -> Path:
    """The probe sources: $VHTUNE_PROBES_DIR, the source tree's probes/, or the packaged copy."""
    env = os.environ.get(PROBES_DIR_ENV)
    if env:
        return Path(env)
    tree = Path(__file__).resolve().parents[2] / "probes"
    for cand in (tree, PACKAGED_PROBES):
        if (cand / "vhtune.bpf.c").is_file():
            return cand
    return tree  # the error then names the source-tree path


@dataclass
class ProbeConfig:
    max_threads: int = 1024
    max_taps: int = 64
    max_fds: int = 1024
    families: tuple[str, ...] = ("sched", "net", "notify", "kvm")
    vhost_kprobes: bool | None = None  # None: try where the kernel allows it; False: never; True: require
    extra_cflags: tuple[str, ...] = ()
    # Compile in a short-lived child and keep only fds here (no LLVM in the agent: ~125 MB less RSS).
    # The kprobe variant needs bcc's attach code, so it compiles in-process.
    compile_in_child: bool = True
    net_variant: str = "auto"  # "counters" (needs BTF), "tracepoints", or "auto": counters where possible
    net_offsets: dict[str, int] = field(default_factory=dict)  # set by load() when the counters variant runs

    def family(self, name: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """(source file, tracepoints, maps) of a family as this configuration compiles it."""
        return NET_COUNTERS if name == "net" and self.net_offsets else FAMILIES[name]

    def cflags(self, ncpus: int, kprobes: bool) -> list[str]:
        flags = [
            f"-I{probes_dir()}",
            f"-DVHT_MAX_THREADS={self.max_threads}",
            f"-DVHT_MAX_TAPS={self.max_taps}",
            f"-DVHT_MAX_FDS={self.max_fds}",
            f"-DVHT_MAX_CPUS={ncpus}",
            *(f"-D{k}={v}" for k, v in sorted(self.net_offsets.items())),
            *self.extra_cflags,
        ]
        if kprobes:
            flags.append("-DVHT_VHOST_KPROBES=1")
        return flags


@dataclass
class Probes:
    """A loaded module: the bcc object plus what was attached and why the rest was not."""

    bpf: Any
    families: dict[str, str] = field(default_factory=dict)  # family → "attached" / "missing: why"
    variants: dict[str, str] = field(default_factory=dict)  # e.g. {"vhost": "tracepoint-only: no kprobes"}
    compile_s: float = 0.0
    attach_s: float = 0.0
    ncpus: int = 1
    config: ProbeConfig = field(default_factory=ProbeConfig)

    active: set[str] = field(default_factory=set)  # families whose tracepoints are attached right now

    def has(self, family: str) -> bool:
        return self.families.get(family) == "attached"

    def activate(self, family: str, on: bool) -> None:
        """Attach or detach a family's tracepoints. Families are attached only while they have targets:
        an idle syscall tracepoint still slows every syscall on the host (TIF_SYSCALL_TRACEPOINT path),
        an idle net tracepoint every packet."""
        if not self.has(family) or (family in self.active) == on:
            return
        for tp in self.config.family(family)[1]:
            try:
                if tp.startswith("raw:"):
                    raw = tp.split("/")[-1].encode()
                    if on:
                        self.bpf.attach_raw_tracepoint(tp=raw, fn_name=b"raw_tracepoint__" + raw)
                    else:
                        self.bpf.detach_raw_tracepoint(tp=raw)
                    continue
                name = tp.replace("/", ":").encode()
                fn = ("tracepoint__" + tp.replace("/", "__")).encode()
                if on:
                    self.bpf.attach_tracepoint(tp=name, fn_name=fn)
                else:
                    self.bpf.detach_tracepoint(name)
            except Exception as exc:  # bcc raises plain Exception
                raise ProbeError(f"could not {'attach' if on else 'detach'} {tp}: {exc}") from None
        if on:
            self.active.add(family)
        else:
            self.active.discard(family)

    def close(self) -> None:
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None

    def __enter__(self) -> Probes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def program_stats(self) -> dict[str, dict[str, int]]:
        """Per BPF program: prog_id, run_cnt, run_time_ns (the last two count only while the sysctl
        kernel.bpf_stats_enabled is 1), from /proc/self/fdinfo of each program fd."""
        out: dict[str, dict[str, int]] = {}
        for name, fn in getattr(self.bpf, "funcs", {}).items():
            info = _fdinfo(fn.fd)
            if "prog_id" in info:
                key = name.decode() if isinstance(name, bytes) else str(name)
                out[key] = {k: info.get(k, 0) for k in ("prog_id", "run_cnt", "run_time_ns")}
        return out


def _fdinfo(fd: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("prog_id", "run_cnt", "run_time_ns"):
                out[key] = int(val.strip())
    except (OSError, ValueError):
        return {}
    return out


def possible_cpus() -> int:
    """Number of possible CPUs (per-CPU maps have one slot each; /sys/devices/system/cpu/possible)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    top = 0
    for part in text.split(","):
        top = max(top, int(part.split("-")[-1]))
    return top + 1


def tracepoint_exists(name: str) -> bool:
    return (TRACEFS / "events" / name / "id").exists()


def kprobes_available() -> str | None:
    """None when kprobes can be attached here, else the reason they cannot."""
    if not (Path("/sys/bus/event_source/devices/kprobe").exists() or (TRACEFS / "kprobe_events").exists()):
        return "the kernel has no kprobe PMU or kprobe_events"
    try:
        syms = Path("/proc/kallsyms").read_text()
    except OSError as exc:
        return f"/proc/kallsyms unreadable ({exc.strerror})"
    if " vhost_signal" not in syms and " vhost_vq_signal" not in syms:
        return "vhost-net is not loaded (no vhost_signal in kallsyms)"
    return None


@contextlib.contextmanager
def _stderr_to(buf: list[str]) -> Iterator[None]:
    # clang and libbpf print on fd 2; keep it for the error message instead of the terminal.
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            buf.append(tmp.read().decode(errors="replace"))


def _errors_only(text: str) -> str:
    lines = [ln for ln in text.splitlines() if "error" in ln.lower()]
    return "; ".join(lines[:3]) or (text.strip().splitlines() or ["no compiler output"])[-1]


def source(families: list[str], kprobes: bool, config: ProbeConfig | None = None) -> str:
    """The module text: the prologue then each selected family file (bcc builds tracepoint arg structs only
    for probes in the main text, so families are concatenated, not #included)."""
    base = probes_dir()
    config = config or ProbeConfig()
    files = ["vhtune.bpf.c"] + [name for f in families for name in config.family(f)[0].split()]
    if kprobes:
        files.append("vhost_kprobe.bpf.c")
    parts = []
    for name in files:
        path = base / name
        try:
            parts.append(f'#line 1 "{name}"\n' + path.read_text())
        except OSError as exc:
            raise ProbeError(
                f"probe source {path} is unreadable ({exc.strerror})", hint=f"set {PROBES_DIR_ENV}"
            ) from None
    return "\n".join(parts)


def _import_bcc() -> Any:
    try:
        import bcc
    except ImportError as exc:
        raise CapabilityError(
            f"bcc is not importable ({exc})", hint="install python3-bpfcc and run `make setup`"
        ) from None
    return bcc


def compile_module(families: list[str], kprobes: bool, config: ProbeConfig, ncpus: int) -> Any:
    """Compile (and auto-attach the tracepoints of) one module; ProbeError with clang's words on failure."""
    bcc = _import_bcc()
    err: list[str] = []
    try:
        with _stderr_to(err):
            return bcc.BPF(text=source(families, kprobes, config).encode(), cflags=config.cflags(ncpus, kprobes))
    except ProbeError:
        raise
    except Exception as exc:
        detail = _errors_only(err[0] if err else "") or str(exc)
        raise ProbeError(
            f"the probes failed to compile or attach: {detail}",
            hint="run `vhtune doctor` (kernel headers, tracefs, bcc)",
        ) from None


def load(config: ProbeConfig | None = None) -> Probes:
    """Compile once, attach every family this kernel supports, return the handle (close() detaches)."""
    config = config or ProbeConfig()
    if os.geteuid() != 0:
        raise CapabilityError("loading eBPF probes needs root", hint="run vhtune record as root")
    if not (TRACEFS / "events").is_dir():
        raise CapabilityError(
            "tracefs is not mounted at /sys/kernel/tracing", hint="mount -t tracefs nodev /sys/kernel/tracing"
        )
    unknown = [f for f in config.families if f not in FAMILIES]
    if unknown:
        raise ProbeError(f"unknown probe families {unknown}", hint=f"choose from {sorted(FAMILIES)}")
    status: dict[str, str] = {}
    chosen: list[str] = []
    for fam in FAMILIES:  # fixed order: notify before kvm
        if fam not in config.families:
            status[fam] = "missing: not requested"
            continue
        absent = [tp for tp in FAMILIES[fam][1] if not tracepoint_exists(tp.removeprefix("raw:"))]
        if absent:
            status[fam] = f"missing: tracepoint {absent[0]} not in this kernel"
        else:
            chosen.append(fam)
    if "kvm" in chosen and "notify" not in chosen:
        chosen.remove("kvm")
        status["kvm"] = "missing: needs the notify family"
    if not chosen:
        raise CapabilityError("none of the probe families' tracepoints exist", hint="run `vhtune doctor`")

    ncpus = possible_cpus()
    variants: dict[str, str] = {}
    why_not = "disabled" if config.vhost_kprobes is False else kprobes_available()
    if config.vhost_kprobes and why_not:
        raise CapabilityError(f"vhost kprobes were required but {why_not}")
    t0 = time.monotonic()
    in_child = config.compile_in_child and why_not is not None
    if in_child:
        from vhtune.probes.handover import load_in_child

        # The child also picks the net variant: parsing the kernel's BTF (5 MB) would leave its pages in the
        # agent's RSS for the life of the recording.
        bpf: Any = load_in_child(chosen, config, ncpus)  # nothing attached yet
        if "net" in chosen:
            config = dataclasses.replace(config, net_offsets=dict(bpf.net_offsets))
            variants["net"] = bpf.net_note
        variants["compile"] = "child process (fds handed over)"
    else:
        if "net" in chosen:
            config, variants["net"] = net_variant(config)
        bpf = compile_module(chosen, kprobes=why_not is None, config=config, ncpus=ncpus)
        variants["compile"] = "in-process (bcc)"
    compile_s = time.monotonic() - t0
    t1 = time.monotonic()
    if why_not is None:
        try:
            _attach_vhost_kprobes(bpf)
            variants["vhost"] = "kprobe"
        except ProbeError as exc:
            if config.vhost_kprobes:
                bpf.cleanup()
                raise
            variants["vhost"] = f"tracepoint-only: {exc.message}"
    else:
        variants["vhost"] = f"tracepoint-only: {why_not}"
    for fam in chosen:
        status[fam] = "attached"
    maps = [m for fam in chosen for m in config.family(fam)[2]] + ["lost"]
    if variants["vhost"] == "kprobe":
        maps.append("vhost_events")
    try:
        check_layouts(bpf, maps)
    except ProbeError:
        bpf.cleanup()
        raise
    probes = Probes(
        bpf=bpf,
        families=status,
        variants=variants,
        compile_s=compile_s,
        attach_s=time.monotonic() - t1,
        ncpus=ncpus,
        config=config,
        active=set() if in_child else set(chosen),
    )
    try:
        if in_child:  # attach the families that need no targets; the rest come with their targets
            for fam in chosen:
                if fam not in LAZY_FAMILIES:
                    probes.activate(fam, True)
        else:
            for fam in LAZY_FAMILIES:  # bcc attached everything; targets attach them again as they come
                probes.activate(fam, False)
    except ProbeError:
        bpf.cleanup()
        raise
    probes.attach_s = time.monotonic() - t1
    return probes


def net_variant(config: ProbeConfig) -> tuple[ProbeConfig, str]:
    """The configuration to compile with and the manifest's words for the net variant."""
    if config.net_variant == "tracepoints":
        return dataclasses.replace(config, net_offsets={}), "tracepoints: requested"
    from vhtune.probes.net_variant import counters_offsets

    try:
        offsets = counters_offsets()
    except CapabilityError as exc:
        if config.net_variant == "counters":
            raise
        return dataclasses.replace(config, net_offsets={}), f"tracepoints: counters variant unavailable ({exc.message})"
    return (
        dataclasses.replace(config, net_offsets=offsets),
        "counters: tap counters per interval + raw tracepoint kfree_skb (BTF offsets)",
    )


def _attach_vhost_kprobes(bpf: Any) -> None:
    for fn, symbols in VHOST_KPROBES.items():
        for sym in symbols:
            try:
                bpf.attach_kprobe(event=sym.encode(), fn_name=fn.encode())
                break
            except Exception:  # bcc raises plain Exception when a symbol cannot be probed
                continue
        else:
            raise ProbeError(f"kprobe on {symbols[0]} could not be attached")
