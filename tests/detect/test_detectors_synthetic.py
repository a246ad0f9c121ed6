"""Unit tests of the detector table on synthetic recordings (vhtune/analysis/synthetic.py models each fault by
the few quantities it changes). The real-fault tests (tests/detect/test_lab_faults.py) use the lab."""

from __future__ import annotations

from pathlib import Path

import pytest

from vhtune import api
from vhtune.analysis.synthetic import FAULTS, SynthSpec, write_synthetic
from vhtune.detect.finding import Finding
from vhtune.detect.table import BY_ID, DETECTORS
from vhtune.report.summary import path_table

EXPECTED = {
    "cpu-hog": ("backend-cpu-contention", "thread-affinity"),
    "shared-cpu": ("backend-cpu-contention", "thread-affinity"),
    "tiny-txqueuelen": ("tap-drops", "tap-txqueuelen"),
    "burst-1": ("small-batches", "backend-tunable"),
    "notify-storm": ("kick-storm", "backend-tunable"),
    "rx-starve": ("rx-ring-starved", "qemu-option"),
    "saturated": ("backend-thread-saturated", "qemu-option"),
    "wakeup-latency": ("backend-wakeup-latency", "thread-sched"),
    "cross-numa": ("cross-numa", "thread-affinity"),
    "halt-poll": ("vcpu-halt-polling", "module-param"),
}
NAMES = list(FAULTS)


def test_table_covers_every_finding_id() -> None:
    ids = {
        "backend-thread-saturated", "backend-cpu-contention", "backend-wakeup-latency", "kick-storm",
        "interrupt-storm", "tap-drops", "rx-ring-starved", "small-batches", "cross-numa", "vcpu-halt-polling",
    }  # fmt: skip
    assert {d.id for d in DETECTORS} == ids
    for d in DETECTORS:
        assert d.thresholds and all(t.source for t in d.thresholds) and d.explanation and d.needs
        assert all(s in BY_ID for s in d.supersedes)
    assert set(EXPECTED) == set(FAULTS)


@pytest.fixture(scope="module")
def all_faults(tmp_path_factory: pytest.TempPathFactory) -> api.Recording:
    """VM 0 healthy, VM i+1 with fault NAMES[i], on a two-node host (cross-numa needs one)."""
    d = tmp_path_factory.mktemp("faults") / "rec"
    faults = {i + 1: f for i, f in enumerate(NAMES)}
    write_synthetic(d, SynthSpec(vms=len(NAMES) + 1, duration_s=15, faults=faults, cpus=32, nodes=2, seed=1))
    return api.load(d)


@pytest.mark.parametrize("fault", NAMES)
def test_top_finding_per_fault(all_faults: api.Recording, fault: str) -> None:
    vm = f"vm{NAMES.index(fault) + 1}"
    mine = [f for f in api.analyze(all_faults) if f.path == vm]
    want_id, want_knob = EXPECTED[fault]
    assert mine, f"no finding on {vm} ({fault})"
    top = mine[0]
    assert (top.id, top.top_knob) == (want_id, want_knob), [(f.id, f.severity) for f in mine]
    assert top.severity in ("warning", "critical") and 0 < top.confidence <= 1
    ev = top.evidence[0]
    assert ev.first and ev.last and ev.share >= 0.2 and ev.source
    for r in top.recommendations:
        assert r.command and r.expected and r.risk and r.rollback
    # everything else on this VM is at most a consequence of the top finding, or of lower rank
    for other in mine[1:]:
        assert other.consequence_of or other.severity != "critical" or top.severity == "critical"


def test_healthy_baseline_has_no_finding(tmp_path: Path) -> None:
    d = write_synthetic(tmp_path / "ok", SynthSpec(vms=4, duration_s=20, seed=7))
    assert api.analyze(api.load(d)) == []


def test_consequences_rank_last(all_faults: api.Recording) -> None:
    findings = api.analyze(all_faults)
    kinds = [f.consequence_of is not None for f in findings]
    assert kinds == sorted(kinds), "consequences come after every root finding"
    storm = [f for f in findings if f.path == f"vm{NAMES.index('notify-storm') + 1}"]
    assert {f.id: f.consequence_of for f in storm}["interrupt-storm"] == "kick-storm"


def test_threshold_edges(tmp_path: Path) -> None:
    """Just below a threshold: nothing; a single bad interval out of many: nothing (persistence rule)."""
    import vhtune.analysis.synthetic as S

    below = {"be_runq": 8.0, "be_runq_bucket": 12}
    S.FAULTS["_below"] = below
    try:
        d = write_synthetic(tmp_path / "b", SynthSpec(vms=1, duration_s=10, faults={0: "_below"}))
        assert [f.id for f in api.analyze(api.load(d))] == []
    finally:
        del S.FAULTS["_below"]
    d = write_synthetic(tmp_path / "c", SynthSpec(vms=1, duration_s=20, faults={0: "cpu-hog"}))
    rec = api.load(d)
    assert [f.id for f in api.analyze(rec)] == ["backend-cpu-contention"]
    # keep the hog in only 1 of 20 intervals: below the 20 % persistence rule
    t = rec.tables["threads"]
    first = t.index.min()
    t.loc[t.index != first, ["runq_ns", "runq_p99_ns"]] = (0, 2.0**15)
    rec.__dict__.pop("thread_metrics", None)
    assert [f.id for f in api.analyze(rec)] == []


def test_without_backend_counters_uses_ebpf_only(tmp_path: Path) -> None:
    faults = {0: "burst-1", 1: "rx-starve", 2: "tiny-txqueuelen"}
    d = write_synthetic(tmp_path / "n", SynthSpec(vms=3, duration_s=10, faults=faults, backend_counters=False))
    rec = api.load(d)
    assert not rec.has_backend_counters
    top: dict[str, Finding] = {}
    for f in api.analyze(rec):
        top.setdefault(f.path, f)
    assert top["vm0"].id == "small-batches" and top["vm0"].confidence < 1  # packets per call: an upper bound
    assert top["vm1"].id == "rx-ring-starved" and "inferred" in top["vm1"].evidence[0].note
    assert top["vm2"].id == "tap-drops"


def _top(
    tmp_path: Path, fault: str, frontend: str = "dpdk", worker_sched: tuple[str, int] = ("other", 0), nice: int = 0
) -> Finding:
    """VM 0 alone on a 2-CPU host, served by a DPDK virtio-user front-end (testpmd as the lab places it)."""
    spec = SynthSpec(
        vms=1, duration_s=10, faults={0: fault}, cpus=2, frontend=frontend, worker_sched=worker_sched, worker_nice=nice
    )
    findings = api.analyze(api.load(write_synthetic(tmp_path / fault, spec)))
    assert findings, f"no finding for {fault}"
    return findings[0]


@pytest.mark.parametrize(
    ("fault", "want"), [("cpu-hog", "backend-cpu-contention"), ("saturated", "backend-thread-saturated")]
)
def test_no_move_onto_the_cpu_a_frontend_lcore_spins_on(tmp_path: Path, fault: str, want: str) -> None:
    """The demo's placement (`vhtune lab run dpdk-sink --fault cpu-hog`): the worker shares CPU 0 with a hog,
    testpmd's forwarding lcore busy-polls CPU 1, its idle main lcore sits on CPU 0. Moving the worker onto the
    lcore's CPU cost 80 % of the packet rate in the closed loop; the old recommender proposed exactly that."""
    top = _top(tmp_path, fault)
    assert top.id == want, top
    assert all(r.knob != "thread-affinity" for r in top.recommendations), top.recommendations
    held = next(e for e in top.evidence if e.metric == "CPUs held by busy data-path threads")
    assert held.value == 1 and held.note.startswith("CPU 1 runs front-end lcore rte-worker-1 of dpdk-testpmd-100000")
    assert "pinned there at 99 % on-CPU" in held.note
    assert "No move to another CPU is proposed" in top.explanation
    assert list(top.details["cpus_taken"]) == ["1"]
    if fault == "cpu-hog":
        assert [r.knob for r in top.recommendations] == ["thread-sched"]


def test_an_idle_pinned_main_lcore_does_not_block_a_move(tmp_path: Path) -> None:
    """Front-end lcore and worker share CPU 0 (the lab's same-cpu); CPU 1 holds only testpmd's main lcore,
    measured idle at its prompt: CPU 1 is free, so moving the worker there comes first."""
    top = _top(tmp_path, "shared-cpu")
    assert top.id == "backend-cpu-contention" and top.details["competitor"]["comm"] == "rte-worker-1"
    recs = [(r.knob, r.proposed) for r in top.recommendations]
    assert recs[0] == ("thread-affinity", "1") and recs[1][0] == "thread-sched", recs
    assert "cpus_taken" not in top.details


def test_busy_pinned_vcpus_rule_out_their_cpu(tmp_path: Path) -> None:
    """The same rule for a KVM guest whose vCPUs (30 % on-CPU) are pinned to the only other CPU."""
    top = _top(tmp_path, "cpu-hog", frontend="kvm")
    assert [r.knob for r in top.recommendations] == ["thread-sched"]
    assert top.details["cpus_taken"]["1"].startswith("CPU 1 runs vCPU CPU 0/KVM of vm0")


@pytest.mark.parametrize("fault", ["cpu-hog", "wakeup-latency"])
def test_real_time_priority_is_proposed_from_the_threads_own_scheduling(tmp_path: Path, fault: str) -> None:
    """The current value and the rollback are the thread's own (discovery read its stat), not assumed."""
    top = _top(tmp_path / "other", fault)
    fifo = next(r for r in top.recommendations if r.knob == "thread-sched")
    assert fifo.current == {"policy": "other", "priority": 0, "nice": 0}
    assert fifo.rollback.startswith("chrt -o -p 0 ") and fifo.rollback.endswith(f"renice -n 0 -p {fifo.target[4:]}")
    low = next(
        r for r in _top(tmp_path / "rr", fault, worker_sched=("rr", 5)).recommendations if r.knob == "thread-sched"
    )
    assert low.current == {"policy": "rr", "priority": 5, "nice": 0} and low.rollback.startswith("chrt -r -p 5 ")


@pytest.mark.parametrize("fault", ["cpu-hog", "wakeup-latency"])
def test_no_real_time_priority_for_a_thread_that_has_one(tmp_path: Path, fault: str) -> None:
    top = _top(tmp_path, fault, worker_sched=("fifo", 20))
    assert all(r.knob != "thread-sched" for r in top.recommendations), top.recommendations
    ev = next(e for e in top.evidence if e.metric == "real-time priority already")
    assert ev.value == 20 and ev.note.startswith("SCHED_FIFO")
    assert "No real-time priority is proposed" in top.explanation


def test_same_named_taps_of_two_netns_are_told_apart(tmp_path: Path) -> None:
    """Kata Containers: each VM has a tap named tap0_kata in a netns of its own; only VM 1's overflows. One
    tap-drops finding, for that netns's tap, on VM 1's path, whose txqueuelen command enters that netns."""
    spec = SynthSpec(vms=2, duration_s=10, faults={1: "tiny-txqueuelen"}, netns_per_vm=True)
    rec = api.load(write_synthetic(tmp_path / "kata", spec))
    keys = set(zip(rec.taps["netns"], rec.taps["ifname"], strict=True))
    assert keys == {("kata-0", "tap0_kata"), ("kata-1", "tap0_kata")}
    drops = [f for f in api.analyze(rec) if f.id == "tap-drops"]
    assert [(f.subject, f.path, f.details["netns"]) for f in drops] == [("tap kata-1/tap0_kata", "vm1", "kata-1")]
    (txq,) = [r for r in drops[0].recommendations if r.knob == "tap-txqueuelen"]
    assert "kata-1" in txq.command and "kata-0" not in txq.command
    qlen = {ns: rec.topology.tap("tap0_kata", ns)["txqueuelen"] for ns in ("kata-0", "kata-1")}
    assert qlen["kata-1"] != qlen["kata-0"] and txq.current == qlen["kata-1"]  # its own tap's, not the first
    # Each VM's path lists the tap it holds (the second one was listed under no path: taps by name kept the first).
    assert {p.name: p.taps for p in rec.topology.paths} == {"vm0": ["tap0_kata"], "vm1": ["tap0_kata"]}
    # The reports' path table names each VM's own tap the way findings and `--tap` do.
    assert {row["path"]: row["taps"] for row in path_table(rec)} == {
        "vm0": "kata-0/tap0_kata",
        "vm1": "kata-1/tap0_kata",
    }


def test_real_time_priority_keeps_the_threads_nice(tmp_path: Path) -> None:
    top = _top(tmp_path, "cpu-hog", nice=-5)
    fifo = next(r for r in top.recommendations if r.knob == "thread-sched")
    assert fifo.proposed == {"policy": "fifo", "priority": 10, "nice": -5}
    assert fifo.command.endswith("renice -n -5 -p " + fifo.target[4:])  # unchanged: the renice is a no-op


def test_no_real_time_priority_for_a_thread_under_sched_ext(tmp_path: Path) -> None:
    """SCHED_EXT (a BPF scheduler, 6.12+): a change to FIFO could not be rolled back (analyze used to crash)."""
    top = _top(tmp_path, "cpu-hog", worker_sched=("ext", 0))
    assert all(r.knob != "thread-sched" for r in top.recommendations), top.recommendations
    ev = next(e for e in top.evidence if e.metric == "scheduling class vhtune cannot restore")
    assert ev.sentence() == (
        "scheduling class vhtune cannot restore: SCHED_EXT: a change to SCHED_FIFO could not be rolled back by vhtune"
    )


@pytest.mark.parametrize("order", ["healthy-then-contended", "contended-then-healthy"])
def test_a_reused_tid_under_a_new_pid_is_another_thread(tmp_path: Path, order: str) -> None:
    """pid_max wrapped: a back-end restarted halfway got a worker whose tid another process's exited worker had.
    Two threads, two series, and the contention finding (and the CPU it proposes) for the contended one only."""
    sick = 1 if order == "healthy-then-contended" else 0
    spec = SynthSpec(vms=2, duration_s=20, faults={sick: "cpu-hog"}, reuse_tid=(0, 1), seed=2)
    rec = api.load(write_synthetic(tmp_path / "reuse", spec))
    s = rec.thread_summary
    workers = s[s["role"] == "backend-worker"]
    assert len(workers) == 2 and workers["tid"].nunique() == 1
    tid = int(workers["tid"].iloc[0])
    assert set(workers["pid"]) == {200_000, 200_010}
    runq = dict(zip(workers["pid"], workers["runq_pct"], strict=True))
    sick_pid, well_pid = 200_000 + 10 * sick, 200_010 - 10 * sick
    assert runq[sick_pid] > 20 > 1 > runq[well_pid]  # not a blend of the two
    assert set(workers["intervals"]) == {10}
    assert dict(zip(workers["pid"], workers["path"], strict=True)) == {200_000: "vm0", 200_010: "vm1"}
    tm = rec.thread_metrics
    assert len(tm[(tm["tid"] == tid) & (tm["pid"] == sick_pid)]) == 10
    cont = [f for f in api.analyze(rec) if f.id == "backend-cpu-contention"]
    assert len(cont) == 1
    f = cont[0]
    assert (f.details["pid"], f.details["tid"], f.path) == (sick_pid, tid, f"vm{sick}")
    assert f"pid {sick_pid}" in f.subject and f"tid {tid}" in f.subject  # one tid, two threads: which one
    assert api.measure(rec, f).value == pytest.approx(runq[sick_pid], rel=0.01)
    # Its own CPU (discovery's affinity of that pid's thread), not the other one's: VM i's worker is on CPU 2i.
    cpus = dict(zip(workers["pid"], workers["cpus"], strict=True))
    assert cpus == {200_000: (0,), 200_010: (2,)}
    move = next(r for r in f.recommendations if r.knob == "thread-affinity")
    assert move.current == str(2 * sick)
