"""The closed loop on real lab faults: baseline recording → analysis → the top runtime recommendation applied
→ a second recording → kept only when the finding's own metric improved by ≥ 25 % (and throughput held);
a harmful change is rolled back by itself. Each run is a real DPDK virtio-user front-end against vhtune's
back-end, recorded with the real probes; tiny-txqueuelen runs on tap-rx (bursty UDP in a netns → the
back-end's tap → DPDK rxonly), where the tap's queue is what overflows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vhtune import api
from vhtune.tune.auto import AutoOptions, run_auto
from vhtune.tune.live import live_scenario

pytestmark = [pytest.mark.usefixtures("require_root"), pytest.mark.slow]

CASES = [
    # scenario, fault, finding the loop must act on, knob it must have kept
    ("dpdk-sink", "burst1", "small-batches", "backend-tunable"),
    ("dpdk-sink", "cpu-hog", "backend-cpu-contention", ("thread-sched", "thread-affinity")),
    ("dpdk-sink", "same-cpu", "backend-cpu-contention", ("thread-affinity", "thread-sched")),
    ("tap-rx", "tiny-txqueuelen", "tap-drops", "tap-txqueuelen"),
]


@pytest.mark.parametrize(("scenario", "fault", "finding", "knob"), CASES, ids=[c[1] for c in CASES])
def test_fix_is_kept_when_it_helps(
    scenario: str, fault: str, finding: str, knob: str | tuple[str, ...], tmp_path: Path, state_root: Path
) -> None:
    opts = AutoOptions(out=tmp_path / "auto", window_s=4.0, only=(finding,), max_tries=2)
    with live_scenario(scenario, [fault], "vhtune", duration_s=150) as live:
        opts.backend_pids = live.backend_pids
        res = run_auto(opts)
    assert res.attempts, res.reason
    kept = res.kept
    assert kept is not None, [a.reason for a in res.attempts]
    assert kept.finding["id"] == finding
    assert kept.change["knob"] in (knob if isinstance(knob, tuple) else (knob,))
    assert kept.gain is not None and kept.gain >= 0.25, kept
    # Every try before the kept one was rolled back; the report and the JSON name them all.
    assert all(a.decision == "rolled-back" for a in res.attempts[:-1])
    summary = json.loads((tmp_path / "auto" / "auto.json").read_text())
    assert summary["decision"] == "kept" and len(summary["attempts"]) == len(res.attempts)
    assert (tmp_path / "auto" / "before.html").exists() and Path(kept.report).exists()
    assert live.summary.get("scenario") == scenario  # the scenario ended cleanly once the loop was done
    if fault == "tiny-txqueuelen":
        # 4 → 1000 in the scenario's own netns, still in place when the scenario ended; drops/s fell to ~0.
        link = live.summary["tap_link"]
        assert kept.change["value"] == 1000 and link["txqueuelen"] == {"start": 4, "end": 1000}
        assert f"netns={link['netns']}" in kept.change["target"]
        # The baseline was recorded once the fault was applied (its discovery saw txqueuelen 4, not 1000).
        assert api.load(Path(res.baseline)).topology.taps[link["name"]]["txqueuelen"] == 4
        assert kept.pps_before is not None and kept.pps_after is not None and kept.pps_after > kept.pps_before, kept


def test_harmful_change_is_rolled_back(tmp_path: Path) -> None:
    """burst 32 → 1 on a healthy path: the batch size collapses, so the loop must undo it by itself."""
    env = {**os.environ, "VHTUNE_STATE_DIR": str(tmp_path / "state")}
    argv = [sys.executable, "-m", "vhtune", "tune", "auto", "--scenario", "dpdk-sink", "--window", "4", "--json"]
    argv += ["--set", "backend-tunable", "pid=auto,key=burst", "1", "--metric", "small-batches"]
    argv += ["-o", str(tmp_path / "auto")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    (att,) = out["auto"]["attempts"]
    assert att["change"]["knob"] == "backend-tunable" and att["change"]["value"] == 1
    assert att["decision"] == "rolled-back" and att["gain"] is not None and att["gain"] < 0
    journal = (tmp_path / "state" / "tune" / "journal" / f"{att['plan_id']}.jsonl").read_text().splitlines()
    events = [json.loads(line)["event"] for line in journal]
    assert events == ["saved", "applied", "restored", "rollback-done"]
    assert json.loads(journal[0])["old"] == 32  # the back-end's default, restored
