"""`vhtune doctor` on the real kernel: the JSON is checked field by field against what this machine can do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vhtune.env.headers import headers_info
from vhtune.env.tracefs import tracepoint_fields

pytestmark = pytest.mark.usefixtures("require_root")


def _doctor_json() -> tuple[int, dict, float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "vhtune", "doctor", "--json"], capture_output=True, text=True, timeout=60
    )
    return proc.returncode, json.loads(proc.stdout), time.monotonic() - start


def test_doctor_json_matches_this_machine() -> None:
    rc, rep, elapsed = _doctor_json()
    assert rc == 0, rep
    assert rep["recording_possible"] is True
    checks = {c["name"]: c for c in rep["checks"]}
    assert checks["kernel"]["detail"] == os.uname().release
    assert checks["root"]["status"] == "ok"
    assert checks["btf"]["status"] == "ok"
    assert checks["tracefs"]["status"] == "ok"
    assert checks["bcc"]["status"] == "ok" and "0.26" in checks["bcc"]["detail"]
    assert checks["bpf-compile"]["status"] == "ok"
    for family in ("sched", "net", "skb", "kvm", "syscalls"):
        assert checks[f"tracepoint:{family}"]["status"] == "ok", checks[f"tracepoint:{family}"]
    assert checks["raw_tracepoint"]["status"] == "ok"
    assert checks["uprobe"]["status"] == "ok"
    # Measured facts of this machine kind (MACHINE.md): no kprobes at all, fentry loads are refused.
    assert checks["kprobe"]["status"] == "unsupported"
    assert "kprobe" in checks["kprobe"]["detail"]
    assert checks["fentry"]["status"] == "unsupported"
    assert rep["capabilities"]["vhost_internals_variant"] == "tracepoint"
    assert checks["/dev/kvm"]["status"] == "ok"
    assert checks["/dev/net/tun"]["status"] == "ok"
    assert checks["/dev/vhost-net"]["status"] == "warn"  # not built on this kernel
    # Debian's 6.1 headers on a 6.18 kernel: a warning that names both releases.
    hdr = headers_info()
    assert checks["headers"]["status"] == ("ok" if hdr.matches else "warn")
    if not hdr.matches:
        assert hdr.release in checks["headers"]["detail"] and os.uname().release in checks["headers"]["detail"]
    assert checks["dpdk-testpmd"]["status"] == "ok"
    assert checks["qemu-system-x86_64"]["status"] == "ok"
    assert checks["hugepages"]["status"] == "ok"
    assert elapsed < 5.0, f"doctor took {elapsed:.1f} s"


def test_doctor_human_output_says_verdict() -> None:
    proc = subprocess.run([sys.executable, "-m", "vhtune", "doctor"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "recording possible" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_tracepoint_fields_come_from_running_kernel() -> None:
    # kfree_skb has no device field on this kernel (MACHINE.md): drops are attributed via skbaddr.
    fields = tracepoint_fields("skb", "kfree_skb")
    assert {"skbaddr", "location", "protocol", "reason"} <= set(fields)
    assert "name" not in fields
    assert "name" in tracepoint_fields("net", "net_dev_queue")


def test_headers_mismatch_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = "9.9.9-test"
    gen = tmp_path / kernel / "build" / "include" / "generated"
    gen.mkdir(parents=True)
    (gen / "utsrelease.h").write_text('#define UTS_RELEASE "6.1.0-56-amd64"\n')
    import vhtune.env.headers as headers

    monkeypatch.setattr(headers, "Path", lambda p: tmp_path if p == "/lib/modules" else Path(p))
    info = headers.headers_info(kernel)
    assert info.present and info.release == "6.1.0-56-amd64" and not info.matches
    (gen / "utsrelease.h").write_text('#define UTS_RELEASE "9.9.1-other"\n')
    assert headers.headers_info(kernel).matches
