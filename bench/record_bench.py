"""What recording costs, measured in one run (run as root after `make setup`):

    .venv/bin/python bench/record_bench.py [--seconds 3] [--rounds 2] [--no-datapath] [--json]

Workloads (each alternates unrecorded / anchor / recorded phases, ``rounds`` times; ratio = median of a
mode / median unrecorded throughput):
- ``tap``: a child writes 64-byte frames to a tap in a bench netns (sys_enter_write + netif_receive_skb +
  kfree_skb per frame — the net and notify probes' hot path);
- ``eventfd``: a child writes a watched eventfd in a loop (sys_enter_write hits in the notify map);
- ``datapath``: DPDK virtio-user (txonly) → vhtune back-end → tap in a netns; back-end packets/s (the
  worst case: a Python back-end making a write syscall per packet into a tap, every packet traced);
- ``datapath-dpdk``: DPDK virtio-user (txonly) → DPDK's vhost PMD (rxonly), both busy-polling, the
  OVS-DPDK shape of a vhost-user host; recorded with both processes' threads and eventfds watched.
Recorded phases run the real agent (`python -m vhtune record`, 1 s interval) watching the load; its
user+system CPU, RSS, start-to-attached time and lost events come from /proc and its JSON summary. The
anchor is the cheapest possible probe: empty programs on the same tracepoints (what any tracepoint tool
costs on this host). One more recorded and one more anchor phase run with kernel.bpf_stats_enabled=1
(restored afterwards) for each program's run_time_ns/run_cnt; throughput phases run with it off.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LOAD = HERE / "record_load.py"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    rate: float
    mode: str  # off | anchor | recorded
    cpu_pct: float = 0.0
    rss_mb: float = 0.0
    anon_mb: float = 0.0
    attach_s: float = 0.0
    lost: int = 0
    programs: dict[str, dict[str, int]] = field(default_factory=dict)
    load_s: float = 0.0


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _mem_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def bpf_stats(on: bool) -> Iterator[None]:
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = path.read_text().strip()
    path.write_text("1" if on else "0")
    try:
        yield
    finally:
        path.write_text(old)


ANCHOR_TPS = {
    "tap": ("syscalls:sys_enter_write", "net:netif_receive_skb", "skb:kfree_skb", "skb:consume_skb"),
    "eventfd": ("syscalls:sys_enter_write", "syscalls:sys_enter_read"),
    "datapath": (
        "syscalls:sys_enter_write",
        "syscalls:sys_enter_read",
        "net:netif_receive_skb",
        "skb:kfree_skb",
        "skb:consume_skb",
        "sched:sched_switch",
    ),
}


class Anchor:
    """Empty programs (``return 0``) on the workload's tracepoints, loaded in this process."""

    def __init__(self, workload: str) -> None:
        from bcc import BPF

        self.bpf = BPF(text="int vhr_anchor(void *ctx) { return 0; }")
        fn = self.bpf.load_func(b"vhr_anchor", BPF.TRACEPOINT)
        for tp in ANCHOR_TPS[workload]:
            self.bpf.attach_tracepoint(tp=tp.encode(), fn_name=b"vhr_anchor")
        self.fd = fn.fd

    def stop(self, phase: Phase) -> None:
        info = {}
        for line in Path(f"/proc/self/fdinfo/{self.fd}").read_text().splitlines():
            k, _, v = line.partition(":")
            info[k] = v.strip()
        phase.programs = {
            "anchor": {"run_cnt": int(info.get("run_cnt", 0)), "run_time_ns": int(info.get("run_time_ns", 0))}
        }
        self.bpf.cleanup()


@contextlib.contextmanager
def netns() -> Iterator[str]:
    name = f"vhrbn{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


class Recording:
    """`python -m vhtune record` watching the given targets; started attached, stopped with SIGINT."""

    def __init__(self, args: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vhrbench"))
        out = self.dir / "rec"
        argv = [sys.executable, "-m", "vhtune", "record", "-o", str(out), "--interval", "1", "--json", *args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while True:  # attached once the first flush (right after attach) reached the manifest
            with contextlib.suppress(OSError, ValueError):
                if json.loads((out / "manifest.json").read_text()).get("flushes", 0) >= 1:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"recorder did not attach: {self.proc.communicate()[1][-500:]}")
            time.sleep(0.02)
        self.cpu0 = _cpu_ticks(self.proc.pid)
        self.t0 = time.monotonic()

    def stop(self, phase: Phase) -> None:
        wall = time.monotonic() - self.t0
        phase.cpu_pct = 100.0 * (_cpu_ticks(self.proc.pid) - self.cpu0) / TICK / wall
        phase.rss_mb = _mem_mb(self.proc.pid, "VmRSS")
        phase.anon_mb = _mem_mb(self.proc.pid, "RssAnon")
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=30)
        if self.proc.returncode != 0:
            raise RuntimeError(f"recorder failed: {err[-500:]}")
        s = json.loads(out)
        phase.attach_s = s["start_to_attached_s"]
        phase.lost = s["lost_events"]
        phase.programs = s["program_stats"]
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


def child_phase(kind: str, seconds: float, ns: str, mode: str) -> Phase:
    argv = [sys.executable, str(LOAD), kind, str(seconds), ns]
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    rec: Recording | Anchor | None = None
    try:
        assert child.stdout is not None and child.stdin is not None
        _, pid, name = child.stdout.readline().split()
        if mode == "recorded":
            extra = ["--tap", name] if name != "-" else []
            rec = Recording(["-p", pid, *extra])
        elif mode == "anchor":
            rec = Anchor(kind)
        child.stdin.write("go\n")
        child.stdin.flush()
        t0 = time.monotonic()
        rate = float(child.stdout.readline().split()[1])
        phase = Phase(rate, mode, load_s=time.monotonic() - t0)
        if rec is not None:
            rec.stop(phase)
            rec = None
        return phase
    finally:
        if isinstance(rec, Recording):
            rec.kill()
        elif rec is not None:
            rec.bpf.cleanup()
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)


def datapath_phases(seconds: float, rounds: int, backend: str = "vhtune") -> tuple[list[Phase], list[Phase]]:
    from vhtune.lab import dpdk
    from vhtune.lab.backends import BackendOptions, DpdkBackend, LabBackend, VhtuneBackend
    from vhtune.lab.names import lab_name
    from vhtune.lab.netns import Netns

    phases: list[Phase] = []
    costs: list[Phase] = []
    tap = lab_name("tp")
    with Netns() as ns:
        be: LabBackend
        if backend == "vhtune":
            be = VhtuneBackend(BackendOptions(port="tap", tap=tap, netns=ns, cpu=1))
        else:
            be = DpdkBackend(BackendOptions(port="sink", cpu=1))
        with be, dpdk.frontend(be.socket, mode="txonly", fwd_cpu=0) as fe:
            fe.start()
            time.sleep(1.0)  # warm up
            if isinstance(be, VhtuneBackend):
                watch = ["-p", str(fe.pid), "--control", str(be.control), "--tap", tap]
            else:
                assert isinstance(be, DpdkBackend) and be.pmd.proc is not None
                watch = ["-p", str(fe.pid), "-p", str(be.pmd.proc.pid)]

            def phase(mode: str) -> Phase:
                rec: Recording | Anchor | None = None
                if mode == "recorded":
                    rec = Recording(watch)
                elif mode == "anchor":
                    rec = Anchor("datapath")
                try:
                    s0, t0 = be.stats(), time.monotonic()
                    time.sleep(seconds)
                    s1, t1 = be.stats(), time.monotonic()
                    p = Phase((s1["from_guest_packets"] - s0["from_guest_packets"]) / (t1 - t0), mode)
                    p.load_s = t1 - t0
                    if rec is not None:
                        rec.stop(p)
                        rec = None
                finally:
                    if isinstance(rec, Recording):
                        rec.kill()
                    elif rec is not None:
                        rec.bpf.cleanup()
                return p

            try:
                with bpf_stats(False):
                    for _ in range(rounds):
                        phases += [phase(m) for m in MODES]
                with bpf_stats(True):
                    costs += [phase("anchor"), phase("recorded")]
            finally:
                fe.stop()
    return phases, costs


MODES = ("off", "anchor", "recorded")


def _cost(phases: list[Phase], mode: str) -> tuple[float, float, dict[str, list[int]]]:
    """(events/s, ns/event, per-program [runs, ns]) of the phases of ``mode``."""
    per_prog: dict[str, list[int]] = {}
    chosen = [p for p in phases if p.mode == mode]
    for p in chosen:
        for prog, v in p.programs.items():
            acc = per_prog.setdefault(prog, [0, 0])
            acc[0] += v["run_cnt"]
            acc[1] += v["run_time_ns"]
    runs = sum(a[0] for a in per_prog.values())
    ns = sum(a[1] for a in per_prog.values())
    secs = sum(p.load_s for p in chosen) or 1.0
    return runs / secs, (ns / runs if runs else float("nan")), per_prog


def summarize(name: str, phases: list[Phase], costs: list[Phase]) -> dict[str, Any]:
    med = {m: statistics.median(p.rate for p in phases if p.mode == m) for m in MODES}
    rec = [p for p in phases + costs if p.mode == "recorded"]
    ev_s, ns_ev, per_prog = _cost(costs, "recorded")
    _, anchor_ns, _ = _cost(costs, "anchor")
    return {
        "workload": name,
        "unrecorded_per_s": med["off"],
        "anchor_ratio": med["anchor"] / med["off"],
        "recorded_per_s": med["recorded"],
        "ratio": med["recorded"] / med["off"],
        "probe_events_per_s": ev_s,
        "ns_per_event": ns_ev,
        "anchor_ns_per_event": anchor_ns,
        "agent_cpu_pct": max(p.cpu_pct for p in rec),
        "agent_rss_mb": max(p.rss_mb for p in rec),
        "agent_anon_mb": max(p.anon_mb for p in rec),
        "start_to_attached_s": max(p.attach_s for p in rec),
        "lost_events": sum(p.lost for p in rec),
        "programs": {k: {"run_cnt": c, "ns_per_run": t / c if c else None} for k, (c, t) in sorted(per_prog.items())},
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "workload",
        "unrecorded/s",
        "recorded/s",
        "ratio",
        "anchor ratio",
        "probe ev/s",
        "ns/event",
        "anchor ns/event",
        "agent CPU %",
        "RSS MB (anon)",
        "attach s",
        "lost",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = (
            r["workload"],
            f"{r['unrecorded_per_s']:,.0f}",
            f"{r['recorded_per_s']:,.0f}",
            f"{r['ratio']:.3f}",
            f"{r['anchor_ratio']:.3f}",
            f"{r['probe_events_per_s']:,.0f}",
            f"{r['ns_per_event']:.0f}",
            f"{r['anchor_ns_per_event']:.0f}",
            f"{r['agent_cpu_pct']:.2f}",
            f"{r['agent_rss_mb']:.0f} ({r['agent_anon_mb']:.0f})",
            f"{r['start_to_attached_s']:.2f}",
            str(r["lost_events"]),
        )
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-datapath", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("record_bench: needs root (eBPF, netns, taps)")
    results = []
    with netns() as ns:
        for kind in ("tap", "eventfd"):
            with bpf_stats(False):
                phases = [child_phase(kind, a.seconds, ns, m) for _ in range(a.rounds) for m in MODES]
            with bpf_stats(True):
                costs = [child_phase(kind, a.seconds, ns, m) for m in ("anchor", "recorded")]
            results.append(summarize(kind, phases, costs))
        if not a.no_datapath:
            results.append(summarize("datapath", *datapath_phases(a.seconds, a.rounds)))
            results.append(summarize("datapath-dpdk", *datapath_phases(a.seconds, a.rounds, backend="dpdk")))
    if a.json:
        print(json.dumps(results, indent=2))
        return
    print(table(results))
    print("\nper program, recorded phase with kernel.bpf_stats_enabled=1 (run_cnt > 1000):")
    for r in results:
        hot = {k: v for k, v in r["programs"].items() if v["run_cnt"] > 1000}
        for k, v in sorted(hot.items(), key=lambda kv: -kv[1]["run_cnt"]):
            print(f"  {r['workload']:9s} {k:42s} runs {v['run_cnt']:>11,}  {v['ns_per_run']:4.0f} ns/run")


if __name__ == "__main__":
    main()
