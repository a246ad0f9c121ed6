"""The notebooks run top to bottom (nbclient) against a real recording made during the test run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture(scope="module")
def real_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `vhtune record` of the lab's dpdk-sink scenario (DPDK virtio-user → vhtune back-end)."""
    out = tmp_path_factory.mktemp("nb") / "rec"
    p = subprocess.run(
        [sys.executable, "-m", "vhtune", "lab", "run", "dpdk-sink", "--duration", "3", "--record", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert (out / "manifest.json").exists(), p.stdout[-2000:]
    return out


@pytest.mark.parametrize("name", ["explore-a-recording.ipynb", "find-the-bottleneck.ipynb"])
def test_notebook_runs(name: str, real_recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            for mod in re.findall(r"^\s*(?:from|import)\s+([\w.]+)", cell.source, re.M):
                assert mod in ("os", "vhtune"), f"{name} imports {mod}; notebooks use only vhtune.api"
    monkeypatch.setenv("VHTUNE_RECORDING", str(real_recording))
    monkeypatch.setenv("VHTUNE_REPORT", str(tmp_path / "nb-report.html"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    text = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    if name.startswith("explore"):
        assert "vhtune-q" in text  # the back-end's worker thread is in the per-thread summary
    else:
        assert (tmp_path / "nb-report.html").stat().st_size > 10_000
        assert "finding(s)" in text
    assert os.environ["VHTUNE_RECORDING"] == str(real_recording)
