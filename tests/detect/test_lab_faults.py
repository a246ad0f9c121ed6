"""Detectors on real recordings of real faults: the lab runs a real front-end (DPDK virtio-user) against the real
vhtune back-end, injects the fault, and `vhtune record` records it with eBPF (plus the back-end's counters,
see lab_harness.py). The TOP finding must be the fault's id and its first recommendation the right knob.

These machines are shared by several engineers' tests at once: a back-end thread may really wait behind another
engineer's process. Scheduling findings (contention, wake-up latency) whose competitor is not one of the
scenario's processes are printed and set aside for the faults that are not about CPU placement; CI runs alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.detect.lab_harness import run_recorded
from vhtune import api
from vhtune.detect.finding import Finding

SCHEDULING = ("backend-cpu-contention", "backend-wakeup-latency")

CASES: list[tuple[str, str, dict[str, object], str, str, str]] = [
    # fault, scenario, run options, expected top finding, its first knob, a word the first command must contain
    # Move it to a really free CPU (taskset) first; real-time priority on its own CPU (chrt) first when every other
    # CPU holds a busy data-path thread, and then never a move onto such a CPU. cpu-hog: the front-end's forwarding
    # lcore busy-polls the only other CPU. same-cpu: that CPU holds only testpmd's idle main lcore (unless another
    # engineer's DPDK poller is pinned there).
    ("cpu-hog", "dpdk-sink", {}, "backend-cpu-contention", "thread-sched", "chrt -f"),
    ("same-cpu", "dpdk-sink", {}, "backend-cpu-contention", "thread-affinity|thread-sched", "taskset|chrt -f"),
    ("burst1", "dpdk-sink", {}, "small-batches", "backend-tunable", '"burst":32'),
    ("no-event-idx", "dpdk-gen", {}, "interrupt-storm", "backend-tunable", '"event_idx":true'),
    ("rx-starve", "dpdk-gen", {}, "rx-ring-starved", "qemu-option", "rx_queue_size=1024"),
]


def environmental(f: Finding, rec: api.Recording) -> bool:
    if f.id not in SCHEDULING:
        return False
    comp = f.details.get("competitor")
    ours = set(rec.manifest.get("selection", {}).get("pids", []))
    return comp is not None and int(comp["pid"]) not in ours


def check_placement(top: Finding, fault: str, frontend_cpu: int) -> None:
    """No move onto a CPU a busy data-path thread holds; when none is proposed, the evidence says who holds them."""
    taken = top.details.get("cpus_taken", {})
    moves = [r for r in top.recommendations if r.knob == "thread-affinity"]
    assert all(str(r.proposed) not in taken for r in moves), (taken, moves)
    knobs = [r.knob for r in top.recommendations]
    if knobs[0] == "thread-affinity":
        assert knobs[:2] == ["thread-affinity", "thread-sched"], top.recommendations
    else:
        assert taken and any(e.metric == "CPUs held by busy data-path threads" for e in top.evidence), top.evidence
    if fault == "cpu-hog":  # the scenario's own lcore spins on the front-end CPU
        assert str(frontend_cpu) in taken and not moves, (taken, top.recommendations)


def ranked(rec: api.Recording, fault: str | None) -> list[Finding]:
    findings = api.analyze(rec)
    for f in findings:
        print(f"  {f.id} {f.subject} {f.severity} {f.confidence} <- {f.consequence_of} | {f.evidence[0].sentence()}")
    if fault in ("cpu-hog", "same-cpu"):
        return findings
    noise = [f for f in findings if environmental(f, rec)]
    for f in noise:
        print(f"  set aside (competitor outside the scenario): {f.id} {f.details.get('competitor')}")
    return [f for f in findings if f not in noise]


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "scenario", "kw", "want", "knob", "word"), CASES, ids=[c[0] for c in CASES])
def test_top_finding_on_real_fault(
    fault: str,
    scenario: str,
    kw: dict[str, object],
    want: str,
    knob: str,
    word: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    summary = run_recorded(monkeypatch, scenario, tmp_path / "rec", [fault], duration=4.0, **kw)
    assert fault in summary["fault_notes"], summary["fault_notes"]
    rec = api.load(tmp_path / "rec")
    assert rec.intervals >= 4 and rec.lost_events == 0
    findings = ranked(rec, fault)
    assert findings, f"no finding for {fault}"
    top = findings[0]
    assert top.id == want, [(f.id, f.severity) for f in findings]
    assert top.severity in ("warning", "critical")
    first = top.recommendations[0]
    assert first.knob in knob.split("|") and any(w in first.command for w in word.split("|")), first
    if fault in ("cpu-hog", "same-cpu"):
        check_placement(top, fault, int(summary["frontend"]["cpu"]))
    if fault == "cpu-hog":
        assert top.details["competitor"]["comm"].startswith("python"), top.details  # the lab's busy loop
    if fault == "same-cpu":
        assert "rte-worker" in top.details["competitor"]["comm"] or "testpmd" in top.details["competitor"]["comm"]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["dpdk-sink", "dpdk-gen"])
def test_healthy_baseline_has_no_warning(scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_recorded(monkeypatch, scenario, tmp_path / "rec", [], duration=4.0)
    rec = api.load(tmp_path / "rec")
    assert rec.intervals >= 4 and rec.has_backend_counters
    assert rec.path_metrics["packets"].sum() > 10_000  # traffic really flowed
    loud = [f for f in ranked(rec, None) if f.severity in ("warning", "critical")]
    # testpmd pushes (or pulls) as fast as it can, so on a quiet host the Python back-end's worker becomes the
    # limit of the path: naming it is right (its on-CPU share is checked against the kernel's own accounting in
    # tests/record). Nothing else may fire on a fault-free run.
    for f in loud:
        if f.id == "backend-thread-saturated":
            value = f.evidence[0].value
            assert f.details["comm"].startswith("vhtune-q") and value is not None and value >= 90, f
    loud = [f for f in loud if f.id != "backend-thread-saturated"]
    assert loud == [], [(f.id, f.subject, f.evidence[0].sentence()) for f in loud]


@pytest.mark.slow
def test_kvm_doorbell_per_packet_is_a_kick_storm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab's tiny KVM VM rings its ioeventfd doorbell for every packet (it has no EVENT_IDX): real kicks that
    KVM signals in the kernel and the back-end drains; the analysis must call that a kick storm."""
    run_recorded(monkeypatch, "kvm-irqfd", tmp_path / "rec", [], duration=4.0)
    rec = api.load(tmp_path / "rec")
    findings = ranked(rec, None)
    top = findings[0]
    assert top.id == "kick-storm", [(f.id, f.severity) for f in findings]
    assert top.evidence[0].value is not None and top.evidence[0].value >= 0.9
    assert top.recommendations and top.recommendations[0].knob == "backend-tunable"
