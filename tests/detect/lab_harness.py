"""Run a real lab scenario recorded the way a user would: `vhtune lab run NAME --record DIR`.

The lab starts `vhtune record -p FRONTEND -p BACKEND`; the recorder finds the vhtune back-end's control socket
from its command line (kick/call eventfd roles) and samples its per-queue counters into the recording's
``backend_queues`` table itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vhtune.lab import scenarios


def run_recorded(
    monkeypatch: pytest.MonkeyPatch, name: str, out: Path, faults: list[str], duration: float = 4.0, **kw: Any
) -> dict[str, Any]:
    summary = scenarios.run(name, scenarios.RunOptions(duration=duration, faults=faults, record=out, **kw))
    rec = summary.get("recording") or {}
    # The recorder's exit code is its own business (a failed detach at exit is reported as non-zero);
    # what matters here is that it attached, recorded and flushed: the manifest says so.
    manifest = json.loads((out / "manifest.json").read_text())
    assert "probes" in manifest and manifest.get("flushes", 0) >= 2, f"the recorder failed: {rec}"
    summary["recorder_exit_code"] = rec.get("exit_code")
    return summary
