"""Reports: HTML rendered by headless Chromium (Debian's) to a PNG and a DOM dump; Markdown; JSON; the CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vhtune import api
from vhtune.analysis.synthetic import SynthSpec, write_synthetic

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> api.Recording:
    d = tmp_path_factory.mktemp("rep") / "rec"
    write_synthetic(d, SynthSpec(vms=3, duration_s=30, faults={1: "cpu-hog", 2: "tiny-txqueuelen"}, seed=5))
    return api.load(d)


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium")
    argv = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_html_renders_in_chromium_with_plots(rec: api.Recording, tmp_path: Path) -> None:
    findings = api.analyze(rec)
    out = api.write_report(rec, findings, tmp_path / "report.html", "html")
    html = out.read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained
    # each embedded plot is a real, non-blank PNG
    pngs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(pngs) == 4
    for b in pngs:
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("L"))
        assert img.shape[0] > 100 and img.std() > 10
    # the DOM Chromium built has the findings and the four plot images
    dom = _chromium(tmp_path, "--dump-dom", out.as_uri())
    assert dom.returncode == 0, dom.stderr[-500:]
    assert dom.stdout.count('src="data:image/png;base64,') == 4
    for name in ("throughput", "backend-cpu", "notifications", "drops"):
        assert f'id="plot-{name}"' in dom.stdout
    assert "backend-cpu-contention" in dom.stdout and "tap-drops" in dom.stdout
    # the screenshot: the page is drawn, and the plots' line colours (matplotlib tab10) are on it
    shot = tmp_path / "shot.png"
    r = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,9000", out.as_uri())
    assert r.returncode == 0 and shot.exists(), r.stderr[-500:]
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert px.std() > 10, "blank page"
    blue = (abs(px[..., 0] - 31) < 20) & (abs(px[..., 1] - 119) < 20) & (abs(px[..., 2] - 180) < 20)
    rows = np.nonzero(blue.any(axis=1))[0]
    assert blue.sum() > 500 and len(rows) > 100, "no plot lines visible in the rendered page"


def test_markdown_and_json(rec: api.Recording, tmp_path: Path) -> None:
    findings = api.analyze(rec)
    md = api.write_report(rec, findings, tmp_path / "r.md", "md").read_text()
    assert md.startswith("# vhtune report")
    assert "`backend-cpu-contention`" in md and "taskset -pc" in md and "ip link set dev vht2 txqueuelen 1000" in md
    # Values as an operator reads them, not Python reprs of the knob's data.
    assert "SCHED_OTHER nice 0 → SCHED_FIFO 10" in md and "{'policy'" not in md
    assert "runq_pct" in md and ">= 10 % in" in md  # the threshold carries its unit too
    data = json.loads(api.write_report(rec, findings, tmp_path / "r.json", "json").read_text())
    assert [f["id"] for f in data["findings"]] == [f.id for f in findings]
    assert data["recording"]["lost_events"] == 0 and data["recording"]["intervals"] == 30
    assert {p["path"] for p in data["paths"]} == {"vm0", "vm1", "vm2"}
    top = data["findings"][0]
    for key in ("id", "subject", "severity", "confidence", "evidence", "recommendations", "span"):
        assert key in top
    rec0 = top["recommendations"][0]
    for key in ("knob", "current", "proposed", "command", "expected", "risk", "rollback"):
        assert rec0[key] not in (None, "")


def test_cli_analyze_and_report(rec: api.Recording, tmp_path: Path) -> None:
    run = [sys.executable, "-m", "vhtune"]
    a = subprocess.run([*run, "analyze", str(rec.path), "--json"], capture_output=True, text=True, timeout=60)
    assert a.returncode == 0, a.stderr
    data = json.loads(a.stdout)
    assert data["findings"][0]["id"] == "backend-cpu-contention"
    wide = {**os.environ, "COLUMNS": "300"}  # rich wraps table cells to the terminal's width
    t = subprocess.run([*run, "analyze", str(rec.path)], capture_output=True, text=True, timeout=60, env=wide)
    assert t.returncode == 0 and "backend-cpu-contention" in t.stdout and "taskset -pc" in t.stdout
    assert "runq_pct" in t.stdout and "% of intervals" in t.stdout  # the evidence column: value, threshold, share
    r = subprocess.run(
        [*run, "report", str(rec.path), "-o", str(tmp_path / "x.md")], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "md report" in r.stdout and (tmp_path / "x.md").read_text().startswith("# vhtune")
