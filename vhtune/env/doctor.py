"""`vhtune doctor`: every fact about this host that decides what vhtune can record and run.

Each check is one line: ok / warn / missing / unsupported, what was found, and the fix. Recording is
possible when the process is root, tracefs is mounted, bcc compiles, and the sched family attaches (the
minimum for thread-level findings); everything else narrows what can be seen and is said so.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from vhtune.env import capabilities as capmod
from vhtune.env.bccload import bcc_version, import_bcc
from vhtune.env.headers import headers_info
from vhtune.env.tracefs import MOUNT_HINT, tracefs_root
from vhtune.errors import CapabilityError

OK, WARN, MISSING, UNSUPPORTED = "ok", "warn", "missing", "unsupported"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class DoctorReport:
    kernel: str
    checks: list[Check] = field(default_factory=list)
    capabilities: dict[str, object] = field(default_factory=dict)
    recording_possible: bool = False
    elapsed_s: float = 0.0

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)


def _device(path: str, what: str, fix: str) -> Check:
    return Check(path, OK, f"{what} present") if Path(path).exists() else Check(path, MISSING, f"{what} absent", fix)


def _hugepages() -> Check:
    try:
        total = int(Path("/proc/sys/vm/nr_hugepages").read_text())
    except OSError:
        return Check("hugepages", MISSING, "no /proc/sys/vm/nr_hugepages", "kernel without hugetlbfs")
    mounted = any(line.split()[2] == "hugetlbfs" for line in Path("/proc/mounts").read_text().splitlines())
    free = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("HugePages_Free:"):
            free = int(line.split()[1])
    fix = "echo 256 > /proc/sys/vm/nr_hugepages; mount -t hugetlbfs nodev /dev/hugepages (or `make setup`)"
    if total == 0 or not mounted:
        return Check("hugepages", WARN, f"{total} reserved, hugetlbfs {'mounted' if mounted else 'unmounted'}", fix)
    return Check("hugepages", OK, f"{free}/{total} free, hugetlbfs mounted")


def _tool(name: str, pkg: str) -> Check:
    path = shutil.which(name)
    return Check(name, OK, path) if path else Check(name, MISSING, "not on PATH", f"apt-get install {pkg}")


def _net_variant() -> Check:
    """Whether `vhtune record` can run the net counters variant (no program per packet, BTF offsets)."""
    from vhtune.errors import CapabilityError
    from vhtune.probes.net_variant import counters_offsets

    try:
        off = counters_offsets()
    except CapabilityError as exc:
        return Check("net-variant", WARN, f"tracepoints (per packet): {exc.message}", exc.hint or "")
    detail = ", ".join(f"{k.removeprefix('VHT_').lower()}={v}" for k, v in off.items())
    return Check("net-variant", OK, f"counters + raw tracepoint kfree_skb ({detail})")


def run_doctor() -> DoctorReport:
    start = time.monotonic()
    kernel = os.uname().release
    rep = DoctorReport(kernel=kernel)
    add = rep.checks.append
    add(Check("kernel", OK, kernel))
    is_root = os.geteuid() == 0
    add(Check("root", OK, "euid 0") if is_root else Check("root", MISSING, "not root", "run as root (sudo)"))
    btf = Path("/sys/kernel/btf/vmlinux")
    add(
        Check("btf", OK, f"{btf} ({btf.stat().st_size // 1024} KiB)")
        if btf.exists()
        else Check("btf", MISSING, "no /sys/kernel/btf/vmlinux", "kernel needs CONFIG_DEBUG_INFO_BTF")
    )
    add(_net_variant())
    troot = tracefs_root()
    add(Check("tracefs", OK, str(troot)) if troot else Check("tracefs", MISSING, "not mounted", MOUNT_HINT))
    hdr = headers_info(kernel)
    if not hdr.present:
        add(
            Check(
                "headers",
                MISSING,
                f"nothing at {hdr.build_dir}",
                "apt-get install linux-headers-amd64; `make setup` links them",
            )
        )
    elif not hdr.matches:
        add(
            Check(
                "headers",
                WARN,
                f"for {hdr.release}, kernel is {kernel}: struct offsets differ (vhtune reads only "
                "tracepoint fields and helpers, which stay correct)",
                "install headers for the running kernel to silence this",
            )
        )
    else:
        add(Check("headers", OK, f"{hdr.release} at {hdr.build_dir}"))

    bcc_ok = True
    try:
        import_bcc()
        add(Check("bcc", OK, f"version {bcc_version() or 'unknown'}"))
    except CapabilityError as exc:
        bcc_ok = False
        add(Check("bcc", MISSING, exc.message, exc.hint or ""))

    caps: capmod.Capabilities | None = None
    if bcc_ok and is_root and hdr.present:
        caps = capmod.detect()
        if caps.compile_error:
            add(Check("bpf-compile", UNSUPPORTED, caps.compile_error, "check kernel headers (`make setup`)"))
        else:
            add(Check("bpf-compile", OK, "bcc compiled and loaded a test module"))
            for mech in caps.mechanisms.values():
                status = {capmod.OK: OK, capmod.MISSING: MISSING, capmod.NOT_TESTED: MISSING}.get(
                    mech.status, UNSUPPORTED
                )
                add(Check(mech.name, status, mech.detail, mech.fix))
            add(
                Check(
                    "probe-variant",
                    OK,
                    f"vhost-net internals via {caps.vhost_internals_variant}; everything else via tracepoints",
                )
            )
        rep.capabilities = caps.as_dict()
    else:
        add(Check("bpf-compile", MISSING, "not tested: needs root, bcc and kernel headers"))

    add(_device("/dev/kvm", "KVM", "enable virtualization / modprobe kvm_intel"))
    add(_device("/dev/net/tun", "TUN/TAP", "modprobe tun"))
    vhost = _device("/dev/vhost-net", "vhost-net", "modprobe vhost_net (only vhost-user back-ends can be seen)")
    if vhost.status == MISSING:
        vhost.status = WARN
    add(vhost)
    add(_hugepages())
    add(_tool("dpdk-testpmd", "dpdk-dev"))
    add(_tool("qemu-system-x86_64", "qemu-system-x86 --no-install-recommends"))

    rep.recording_possible = bool(
        is_root and troot and caps and not caps.compile_error and caps.works("tracepoint:sched")
    )
    rep.elapsed_s = time.monotonic() - start
    return rep
