"""VM churn: ten QEMU processes start and stop during one recording; re-discovery picks each VM's vCPU
thread up and lets it go without a restart. The VMs are paused (-S, TCG, 16 MiB, no devices): they exist
for discovery only and are killed by this test."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.discover.conftest import start_paused_qemu, vcpu0_tid
from tests.record.conftest import RecordProcess
from vhtune.record import read_manifest, read_table

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_ten_vms_coming_and_going_are_picked_up_and_let_go(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    vms: list[subprocess.Popen[bytes]] = []
    vcpus: dict[int, int] = {}
    with RecordProcess(out, "--duration", "9", "--interval", "0.25", "--refresh", "0.4", "--json") as rec:
        try:
            rec.wait_flushes(1, timeout=20)
            for i in range(10):
                vm = start_paused_qemu(f"vhrq{os.getpid()}x{i}", "16")
                vms.append(vm)
                vcpus[vm.pid] = vcpu0_tid(vm)
                time.sleep(0.3)
                if i >= 3:  # each VM lives ~1-1.5 s: at most four at a time
                    old = vms[i - 3]
                    old.kill()
                    old.wait(timeout=10)
            time.sleep(1.2)
            for vm in vms:
                vm.kill()
                vm.wait(timeout=10)
            stdout, stderr = rec.communicate(timeout=30)
        finally:
            for vm in vms:
                if vm.poll() is None:
                    vm.kill()
                    vm.wait(timeout=10)
    assert rec.returncode == 0, stderr
    summary = json.loads(stdout)
    m = read_manifest(out)
    added = {a for ch in m["changes"] for a in ch["added"]}
    removed = {r for ch in m["changes"] for r in ch["removed"]}
    for pid, tid in vcpus.items():
        assert any(a.startswith(f"thread {tid} (CPU 0/TCG, vcpu)") for a in added), (pid, tid, m["changes"])
        assert f"thread {tid}" in removed, (pid, tid)
    threads = read_table(out, "threads")
    ours = threads[threads["tid"].isin(list(vcpus.values()))]
    assert set(ours["tid"]) == set(vcpus.values())
    assert set(ours["role"]) == {"vcpu"} and (ours["pid"].isin(list(vcpus))).all()
    assert summary["stop_reason"] == "duration" and summary["lost_events"] == 0
