"""The .deb: built by `make deb`, installed with apt on this host, `vhtune doctor` passes from it, the unit
file verifies, and removal leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.usefixtures("require_root"), pytest.mark.slow]


def _installed() -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "vhtune"], capture_output=True, text=True)
    return "install ok installed" in proc.stdout


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    proc = subprocess.run(
        ["bash", "packaging/build-deb.sh", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("vhtune_*_amd64.deb")
    return path


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[Path]:
    if _installed():
        pytest.skip("a vhtune package is already installed on this host; not replacing it (CI hosts have none)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(
        ["apt-get", "install", "-y", "-qq", str(deb)], capture_output=True, text=True, timeout=600, env=env
    )
    try:
        assert proc.returncode == 0, proc.stderr[-2000:]
        yield deb
    finally:
        subprocess.run(["apt-get", "remove", "--purge", "-y", "-qq", "vhtune"], capture_output=True, env=env)


def test_package_metadata(deb: Path) -> None:
    info = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Depends"], capture_output=True, text=True)
    assert "Package: vhtune" in info.stdout
    assert "python3-bpfcc" in info.stdout
    files = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True).stdout
    for path in (
        "./usr/bin/vhtune",
        "./lib/systemd/system/vhtune.service",
        "./usr/share/vhtune/grafana-dashboard.json",
    ):
        assert path in files


def test_installed_doctor_and_unit(installed: Path) -> None:
    proc = subprocess.run(["/usr/bin/vhtune", "doctor", "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["recording_possible"] is True
    # The installed venv sees Debian's bcc, not a copy.
    bcc = subprocess.run(
        ["/usr/lib/vhtune/venv/bin/python", "-c", "import bcc; print(bcc.__file__)"], capture_output=True, text=True
    )
    assert bcc.stdout.startswith("/usr/lib/python3/dist-packages/bcc")
    verify = subprocess.run(
        ["systemd-analyze", "verify", "/lib/systemd/system/vhtune.service"], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stderr


def test_installed_package_records(installed: Path, tmp_path: Path) -> None:
    """The packaged probe sources compile and attach: a 2 s recording of a process from the installed vhtune."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        out = tmp_path / "rec"
        argv = ["/usr/bin/vhtune", "record", "-o", str(out), "-p", str(sleeper.pid), "--duration", "2", "--json"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/")
        assert proc.returncode == 0, proc.stderr[-2000:]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["complete"] is True and "probes" in manifest
    finally:
        sleeper.kill()
        sleeper.wait()


def test_removal_leaves_nothing(installed: Path) -> None:
    # Runs after the install test in this module; removing here and checking is the last step.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "remove", "--purge", "-y", "-qq", "vhtune"], capture_output=True, env=env, check=True)
    assert not Path("/usr/bin/vhtune").exists()
    assert not Path("/usr/lib/vhtune").exists()
