"""Synthetic recordings in the documented layout (manifest.json + ``<table>/NNNNNN.parquet``), for unit tests
and the 1 h x 64 VM benchmark. They are *models*, not measurements: each VM is a vhtune back-end (one worker
thread, a tap) serving a KVM guest (two vCPUs) or, with ``frontend="dpdk"``, a DPDK virtio-user process as
the lab runs testpmd (a forwarding lcore that busy-polls, an idle main lcore on the next CPU); the numbers
follow the recording schema's units and the relations a real data path has (kicks drained by the back-end =
kicks written by the guest, injections = calls on the irqfd path, drops attributed to a tap by reason). A fault
profile changes the few quantities the fault really changes, so each detector can be unit-tested in
isolation; the real-fault tests use the lab.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vhtune.cli.output import to_jsonable
from vhtune.discover.model import (
    BackendInfo,
    CpuInfo,
    NetdevInfo,
    Snapshot,
    TapInfo,
    ThreadInfo,
    VMInfo,
)
from vhtune.record.backend_table import BACKEND_QUEUES
from vhtune.record.frames import coerce
from vhtune.recording_tables import (
    COMPETITORS,
    IRQS,
    LOST,
    QUEUES,
    RUNQ_HIST,
    TAP_DROPS,
    TAPS,
    THREADS,
    VCPU_WAKEUPS,
)
from vhtune.schema import MANIFEST_NAME, RECORDING_FORMAT, SCHEMA_VERSION, TABLES, TableSchema

FULL_RING = 17  # an skb_drop_reason value; the name is what detectors read

# Healthy data path (per VM): rates per second and shares; faults override a few of them.
BASELINE: dict[str, float] = {
    "pps": 200_000.0,
    "pkt_bytes": 512.0,
    "be_oncpu": 45.0,  # back-end worker on-CPU %
    "be_runq": 0.5,  # % of the interval runnable but waiting
    "be_runq_bucket": 12,  # log2 ns of the typical wait (4 µs)
    "vcpu_oncpu": 30.0,
    "vcpu_runq": 0.3,
    "lcore_oncpu": 99.5,  # DPDK front-end: its forwarding lcore polls whether there is traffic or not
    "main_oncpu": 0.1,  # DPDK front-end: its main lcore waits at the prompt
    "kicks_per_pkt": 0.02,
    "calls_per_pkt": 0.03,
    "burst": 16.0,
    "tap_drop_share": 0.0,
    "no_rx_buffer_share": 0.0,
    "competitor_share": 0.0,  # share of the interval another task held the back-end's CPU while it waited
    "vcpu_wakeups_per_call": 0.8,
    "vcpu_waited_share": 0.2,
    "txqueuelen": 1000,
}

FAULTS: dict[str, dict[str, Any]] = {
    "cpu-hog": {"pps": 110_000.0, "be_oncpu": 50.0, "be_runq": 40.0, "be_runq_bucket": 20, "competitor_share": 0.4},
    "shared-cpu": {"pps": 120_000.0, "be_runq": 30.0, "be_runq_bucket": 19, "vcpu_runq": 25.0, "shared_cpu": True},
    "tiny-txqueuelen": {"txqueuelen": 8, "tap_drop_share": 0.05},
    "burst-1": {"pps": 90_000.0, "be_oncpu": 85.0, "burst": 1.0, "calls_per_pkt": 1.0},
    "notify-storm": {"kicks_per_pkt": 1.0, "calls_per_pkt": 1.0, "burst": 1.1, "be_oncpu": 70.0},
    "rx-starve": {"no_rx_buffer_share": 0.1, "tap_drop_share": 0.02, "be_oncpu": 20.0},
    "saturated": {"be_oncpu": 99.0, "pps": 400_000.0},
    "wakeup-latency": {"be_runq": 2.0, "be_runq_bucket": 20},
    "cross-numa": {"cross_numa": True},
    "halt-poll": {"vcpu_wakeups_per_call": 3.0, "calls_per_pkt": 0.05, "vcpu_waited_share": 0.95},
}


@dataclass
class SynthSpec:
    vms: int = 2
    duration_s: float = 30.0
    interval_s: float = 1.0
    faults: Mapping[int, str] = field(default_factory=dict)  # VM index → a FAULTS name
    backend_counters: bool = True
    seed: int = 0
    chunk_intervals: int = 300
    cpus: int = 8
    nodes: int = 1
    frontend: str = "kvm"  # "kvm": a QEMU/KVM guest; "dpdk": a DPDK virtio-user process (no VM)
    worker_sched: tuple[str, int] = ("other", 0)  # the back-end worker's policy and real-time priority
    worker_nice: int = 0
    netns_per_vm: bool = False  # Kata Containers: every VM's tap is named tap0_kata, in a netns kata-<i> of its own
    # (a, b): VM a's back-end exits halfway through and VM b's starts then, its worker getting VM a's worker's
    # tid (pid_max wrapped): one tid, two pids, two threads in turn. Rows of a's back-end end, b's begin, there.
    reuse_tid: tuple[int, int] | None = None


# The front-end's two recorded threads per kind: comm, role, on-CPU and run-queue keys of the profile.
FRONTEND_THREADS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "kvm": (("CPU 0/KVM", "vcpu", "vcpu_oncpu", "vcpu_runq"), ("CPU 1/KVM", "vcpu", "vcpu_oncpu", "vcpu_runq")),
    "dpdk": (
        ("rte-worker-1", "frontend", "lcore_oncpu", "vcpu_runq"),
        ("dpdk-testpmd", "other", "main_oncpu", "vcpu_runq"),
    ),
}


@dataclass
class _VM:
    i: int
    p: dict[str, Any]
    qemu: int  # the front-end's pid
    vcpus: tuple[int, int]  # its two recorded threads (DPDK: the forwarding lcore, then the main lcore = the pid)
    backend: int
    worker: int
    tap: str
    be_cpu: int
    vcpu_cpu: int
    netns: str = "root"


def _vms(spec: SynthSpec) -> list[_VM]:
    if spec.frontend not in FRONTEND_THREADS:
        raise ValueError(f"unknown synthetic front-end {spec.frontend!r}; known: {', '.join(FRONTEND_THREADS)}")
    out = []
    for i in range(spec.vms):
        fault = spec.faults.get(i)
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown synthetic fault {fault!r}; known: {', '.join(FAULTS)}")
        p = {**BASELINE, **(FAULTS[fault] if fault else {})}
        be_cpu = (2 * i) % spec.cpus
        vcpu_cpu = be_cpu if p.get("shared_cpu") else (2 * i + 1) % spec.cpus
        qemu = 100_000 + 10 * i
        fe = (qemu + 1, qemu + 2) if spec.frontend == "kvm" else (qemu + 1, qemu)
        tap, netns = ("tap0_kata", f"kata-{i}") if spec.netns_per_vm else (f"vht{i}", "root")
        out.append(_VM(i, p, qemu, fe, 200_000 + 10 * i, 200_001 + 10 * i, tap, be_cpu, vcpu_cpu, netns))
    if spec.reuse_tid is not None:
        a, b = spec.reuse_tid
        out[b].worker = out[a].worker
    return out


def _reused(spec: SynthSpec, vms: list[_VM], df: pd.DataFrame, mid: pd.Timestamp) -> pd.DataFrame:
    """``spec.reuse_tid``: rows of the first back-end before ``mid`` only, of the second from ``mid`` on."""
    if spec.reuse_tid is None or "pid" not in df.columns or not len(df):
        return df
    a, b = (vms[i].backend for i in spec.reuse_tid)
    ts = pd.to_datetime(df["ts"], utc=True)
    gone = ((df["pid"] == a) & (ts >= mid)) | ((df["pid"] == b) & (ts < mid))
    return df[~gone]


def snapshot(spec: SynthSpec) -> Snapshot:
    per_node = max(1, spec.cpus // spec.nodes)
    node = {c: min(c // per_node, spec.nodes - 1) for c in range(spec.cpus)}
    snap = Snapshot(taken_at=0.0, hostname="synthetic", kernel="synthetic")
    snap.cpus = [CpuInfo(c, node[c]) for c in range(spec.cpus)]
    for v in _vms(spec):
        be_cpu = v.be_cpu
        if v.p.get("cross_numa") and spec.nodes > 1:
            be_cpu = next(c for c in range(spec.cpus) if node[c] != node[v.vcpu_cpu])
            v.be_cpu = be_cpu
        if spec.frontend == "kvm":
            _kvm_frontend(snap, v, node)
        else:
            _dpdk_frontend(snap, v, node, spec.cpus)
        snap.threads.append(ThreadInfo(v.backend, v.backend, "vhtune", "other"))
        snap.threads.append(
            ThreadInfo(
                v.backend,
                v.worker,
                "vhtune-q0",
                "backend-worker",
                (be_cpu,),
                be_cpu,
                node[be_cpu],
                queue=0,
                policy=spec.worker_sched[0],
                rt_priority=spec.worker_sched[1],
                nice=spec.worker_nice,
            )
        )
        snap.taps.append(TapInfo(v.tap, 100 + v.i, v.netns, (v.backend,), 1, int(v.p["txqueuelen"]), True, False))
        snap.backends.append(BackendInfo(v.backend, "vhtune", "vhtune", [v.worker], [f"/run/vht{v.i}.sock"], [v.qemu]))
    return snap


def _kvm_frontend(snap: Snapshot, v: _VM, node: dict[int, int]) -> None:
    snap.vms.append(
        VMInfo(
            pid=v.qemu,
            name=f"vm{v.i}",
            accel="kvm",
            vcpu_tids=list(v.vcpus),
            netdevs=[NetdevInfo(id="net0", kind="vhost-user", chardev="c0", socket_path=f"/run/vht{v.i}.sock")],
            memory_nodes=[node[v.vcpu_cpu]],
        )
    )
    snap.threads.append(ThreadInfo(v.qemu, v.qemu, "qemu-system-x86", "vmm"))
    for k, tid in enumerate(v.vcpus):
        snap.threads.append(
            ThreadInfo(v.qemu, tid, f"CPU {k}/KVM", "vcpu", (v.vcpu_cpu,), v.vcpu_cpu, node[v.vcpu_cpu], k)
        )


def _dpdk_frontend(snap: Snapshot, v: _VM, node: dict[int, int], cpus: int) -> None:
    """testpmd ``-l MAIN,FWD``: the forwarding lcore pinned to the front-end's CPU, the main lcore to the next one
    (vhtune/lab/dpdk.py's placement); no VM, so the path is named after the process ("dpdk-testpmd-<pid>")."""
    lcore, main = v.vcpus
    main_cpu = (v.vcpu_cpu + 1) % cpus
    snap.threads.append(ThreadInfo(v.qemu, main, "dpdk-testpmd", "other", (main_cpu,), main_cpu, node[main_cpu]))
    snap.threads.append(
        ThreadInfo(v.qemu, lcore, "rte-worker-1", "frontend", (v.vcpu_cpu,), v.vcpu_cpu, node[v.vcpu_cpu], queue=1)
    )


def _noise(rng: np.random.Generator, n: int, rel: float = 0.05) -> np.ndarray:
    return np.clip(rng.normal(1.0, rel, n), 0.5, 1.5)


def _kvm_tables(
    T: np.ndarray,
    qemu: np.ndarray,
    backend: np.ndarray,
    calls: np.ndarray,
    per_call: np.ndarray,
    waited_share: np.ndarray,
) -> dict[str, pd.DataFrame]:
    """irqs (each call an MSI injected through the irqfd) and vcpu_wakeups (of vCPU 0) of a KVM guest."""
    irqs = pd.DataFrame(
        {
            "ts": T,
            "pid": backend,
            "kind": "msi",
            "gsi": 33,
            "level": 1,
            "via_pid": backend,
            "via_fd": 13,
            "count": calls,
        }
    )
    vw = np.rint(calls * per_call).astype(np.int64)
    waited = np.rint(vw * waited_share).astype(np.int64)
    wakeups = pd.DataFrame(
        {
            "ts": T,
            "pid": qemu,
            "tid": qemu + 1,
            "wakeups": vw,
            "polled": vw - waited,
            "waited": waited,
            "invalid": 0,
            "poll_ns": (vw - waited) * 20_000,
            "wait_ns": waited * 200_000,
        }
    )
    return {"irqs": irqs, "vcpu_wakeups": wakeups}


def _chunk(spec: SynthSpec, vms: list[_VM], ts: pd.DatetimeIndex, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    n, iv = len(ts), spec.interval_s
    ivns = iv * 1e9
    P = {k: np.array([float(v.p.get(k, 0.0)) for v in vms]) for k in BASELINE}
    nv = len(vms)
    T = np.repeat(ts.to_numpy(), nv)  # interval-major, then VM
    vi = np.tile(np.arange(nv), n)

    def col(k: str, rel: float = 0.05) -> np.ndarray:
        return P[k][vi] * _noise(rng, n * nv, rel)

    pkts = np.rint(col("pps") * iv).astype(np.int64)
    out: dict[str, pd.DataFrame] = {}
    qemu = np.array([v.qemu for v in vms])[vi]
    backend = np.array([v.backend for v in vms])[vi]
    # threads: back-end worker + the front-end's two (vCPUs, or a DPDK forwarding and main lcore) per VM
    rows = []
    hist = []
    fe = FRONTEND_THREADS[spec.frontend]
    for role_k, (comm, role, on_k, rq_k) in enumerate((("vhtune-q0", "backend-worker", "be_oncpu", "be_runq"), *fe)):
        bucket_k = "be_runq_bucket" if role_k == 0 else None
        tid = np.array([v.worker if role_k == 0 else v.vcpus[role_k - 1] for v in vms])[vi]
        oncpu = np.clip(col(on_k, 0.03), 0, 100)
        runq = np.clip(col(rq_k, 0.1), 0, 100)
        wakeups = (
            np.rint(pkts / np.maximum(P["burst"][vi], 1.0)) if role_k == 0 else np.rint(col("calls_per_pkt") * pkts)
        )
        wakeups = np.maximum(wakeups, 1).astype(np.int64)
        bucket = P[bucket_k][vi].astype(np.int64) if bucket_k else np.full(n * nv, 12, np.int64)
        rows.append(
            pd.DataFrame(
                {
                    "ts": T,
                    "interval_s": iv,
                    "pid": backend if role_k == 0 else qemu,
                    "tid": tid,
                    "comm": comm,
                    "role": role,
                    "oncpu_ns": (oncpu / 100 * ivns).astype(np.int64),
                    "oncpu_pct": oncpu,
                    "runq_ns": (runq / 100 * ivns).astype(np.int64),
                    "runq_count": wakeups,
                    "runq_p50_ns": np.power(2.0, bucket + 1),
                    "runq_p99_ns": np.power(2.0, bucket + 3),
                    "wakeups": wakeups,
                    "vol_switches": wakeups,
                    "invol_switches": np.rint(wakeups * runq / 100).astype(np.int64),
                    "migrations": 0,
                }
            )
        )
        for b, share in ((0, 0.5), (1, 0.45), (2, 0.05)):
            hist.append(
                pd.DataFrame(
                    {
                        "ts": T,
                        "pid": backend if role_k == 0 else qemu,
                        "tid": tid,
                        "bucket": bucket + b,
                        "lo_ns": np.power(2, bucket + b),
                        "count": np.maximum(np.rint(wakeups * share), 1).astype(np.int64),
                    }
                )
            )
    out["threads"] = pd.concat(rows, ignore_index=True)
    out["runq_hist"] = pd.concat(hist, ignore_index=True)
    # competitors: a hog (or the VM's own vCPU, or the DPDK front-end's lcore) held the back-end's CPU while it waited
    comp = P["competitor_share"][vi] > 0
    shared = np.array([bool(v.p.get("shared_cpu")) for v in vms])[vi]
    cm = comp | shared
    out["competitors"] = pd.DataFrame(
        {
            "ts": T[cm],
            "cpu": np.array([v.be_cpu for v in vms])[vi][cm],
            "pid": np.where(shared, qemu, 300_000 + vi)[cm],
            "tid": np.where(shared, qemu + 1, 300_000 + vi)[cm],
            "comm": np.where(shared, fe[0][0], "stress-ng-cpu")[cm],
            "ns": (np.where(shared, P[fe[0][2]][vi] / 100, P["competitor_share"][vi]) * ivns).astype(np.int64)[cm],
            "slices": 100,
        }
    )
    # taps: half the packets each way
    drops = np.rint(pkts * col("tap_drop_share")).astype(np.int64)
    half = pkts // 2
    b = np.rint(P["pkt_bytes"][vi]).astype(np.int64)
    out["taps"] = pd.DataFrame(
        {
            "ts": T,
            "interval_s": iv,
            "ifname": [vms[j].tap for j in vi],
            "netns": [vms[j].netns for j in vi],
            "rx_packets": half,
            "rx_bytes": half * b,
            "tx_packets": pkts - half,
            "tx_bytes": (pkts - half) * b,
            "tx_errors": 0,
            "tx_queued": pkts - half,
            "drops": drops,
            "rx_pps": half / iv,
            "tx_pps": (pkts - half) / iv,
        }
    )
    dm = drops > 0
    out["tap_drops"] = pd.DataFrame(
        {
            "ts": T[dm],
            "netns": np.array([v.netns for v in vms])[vi][dm],
            "ifname": np.array([v.tap for v in vms])[vi][dm],
            "direction": "tx",
            "reason": FULL_RING,
            "reason_name": "FULL_RING",
            "count": drops[dm],
        }
    )
    kicks = np.rint(col("kicks_per_pkt") * pkts).astype(np.int64)
    calls = np.rint(col("calls_per_pkt") * pkts).astype(np.int64)
    kvm = spec.frontend == "kvm"  # a DPDK front-end polls its rings: no irqfd injection, no vCPU to wake
    none = np.zeros_like(kicks)
    q = []
    for pid, fd, role, qi, w, r, inj in (
        (qemu, 30, "kick", 1, kicks, none, none),
        (backend, 12, "kick", 1, none, kicks, none),
        (backend, 13, "call", 0, calls, none, calls if kvm else none),
    ):
        q.append(
            pd.DataFrame(
                {
                    "ts": T,
                    "interval_s": iv,
                    "pid": pid,
                    "fd": fd,
                    "role": role,
                    "queue": qi,
                    "eventfd_id": 1000 + vi * 2 + (role == "call"),
                    "writes": w,
                    "reads": r,
                    "injections": inj,
                }
            )
        )
    out["queues"] = pd.concat(q, ignore_index=True)
    if kvm:
        out.update(_kvm_tables(T, qemu, backend, calls, P["vcpu_wakeups_per_call"][vi], P["vcpu_waited_share"][vi]))
    out["vhost_events"] = pd.DataFrame(columns=TABLES["vhost_events"].names)
    out["lost"] = pd.DataFrame({"ts": ts.to_numpy(), **{c: 0 for c in LOST.names if c != "ts"}})
    if spec.backend_counters:
        bursts = np.maximum(np.rint(pkts / P["burst"][vi]), 1).astype(np.int64)
        norx = np.rint(pkts * P["no_rx_buffer_share"][vi]).astype(np.int64)
        out["backend_queues"] = pd.DataFrame(
            {
                "ts": T,
                "interval_s": iv,
                "pid": backend,
                "queue": 0,
                "dir": "rx",
                "packets": pkts,
                "bytes": pkts * b,
                "kicks": kicks,
                "calls": calls,
                "wakeups": bursts,
                "bursts": bursts,
                "drops_no_rx_buffer": norx,
                "drops_tap_full": 0,
                "drops_other": 0,
            }
        )
    return out


SCHEMAS: dict[str, TableSchema] = {
    s.name: s for s in (THREADS, RUNQ_HIST, COMPETITORS, TAPS, TAP_DROPS, QUEUES, IRQS, VCPU_WAKEUPS, LOST)
}
SCHEMAS["vhost_events"] = TABLES["vhost_events"]
SCHEMAS["backend_queues"] = BACKEND_QUEUES


def write_synthetic(out: Path | str, spec: SynthSpec | None = None, *, complete: bool = True) -> Path:
    """Write a synthetic recording to ``out`` (created; must not hold a recording) and return its path."""
    spec = spec or SynthSpec()
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    if (d / MANIFEST_NAME).exists():
        raise FileExistsError(f"{d} already holds a recording")
    rng = np.random.default_rng(spec.seed)
    snap = snapshot(spec)
    vms = _vms(spec)
    for v, b in zip(vms, [t for t in snap.threads if t.role == "backend-worker"], strict=True):
        v.be_cpu = b.affinity[0]
    n_iv = max(1, round(spec.duration_s / spec.interval_s))
    start = pd.Timestamp("2026-01-01T00:00:00Z")
    rows: dict[str, int] = {}
    seq = 0
    mid = start + pd.Timedelta(seconds=n_iv // 2 * spec.interval_s + spec.interval_s / 2)
    for first in range(0, n_iv, spec.chunk_intervals):
        seq += 1
        count = min(spec.chunk_intervals, n_iv - first)
        ts = pd.date_range(
            start + pd.Timedelta(seconds=(first + 1) * spec.interval_s),
            periods=count,
            freq=pd.Timedelta(seconds=spec.interval_s),
        )
        for name, df in _chunk(spec, vms, ts, rng).items():
            df = _reused(spec, vms, df, mid)
            if not len(df):
                continue
            tdir = d / name
            tdir.mkdir(exist_ok=True)
            table = pa.Table.from_pandas(coerce(SCHEMAS[name], df), preserve_index=False)
            pq.write_table(table, tdir / f"{seq:06d}.parquet")
            rows[name] = rows.get(name, 0) + len(df)
    manifest = {
        "format": RECORDING_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "vhtune_version": "synthetic",
        "synthetic": {"vms": spec.vms, "faults": {str(k): v for k, v in spec.faults.items()}, "seed": spec.seed},
        "started_at": start.timestamp(),
        "ended_at": start.timestamp() + n_iv * spec.interval_s if complete else None,
        "complete": complete,
        "stop_reason": "duration" if complete else None,
        "flushes": seq,
        "interval_s": spec.interval_s,
        "tables": {name: TABLES[name].names for name in TABLES},
        "rows": rows,
        "changes": [],
        "host": "synthetic",
        "probes": {
            "families": {"sched": "tracepoint", "net": "tracepoint", "notify": "tracepoint", "kvm": "tracepoint"},
            "variants": {"vhost": "absent (synthetic)"},
        },
        "discovery": to_jsonable(snap),
    }
    (d / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return d
