"""`vhtune discover` rendering and JSON over a fixture tree (the real host is covered in test_real_host)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.discover.test_fixture_trees import frontend_host, libvirt_host  # noqa: F401 (fixtures)
from vhtune.cli import cli, main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()  # commands load lazily on first use


def test_rendering_names_vm_threads_netdevs_and_backend(runner: CliRunner, libvirt_host: Path) -> None:  # noqa: F811
    res = runner.invoke(cli, ["discover", "--root", str(libvirt_host)], env={"COLUMNS": "220"})
    assert res.exit_code == 0, res.output
    out = res.output
    for text in (
        "VM web01",
        "uuid 5b1e3c9a-7d0f-4c1e-9a55-2f6f0c1d9e01",
        "4096 MiB",
        "memory on node 1",
        "CPU 1/KVM",
        "vhost-1000",
        "hostnet0",
        "vnet0",
        "vhost-net",
        "/var/run/openvswitch/vhu-web01",
        "QEMU listens",
        "back-end pid 2000 ovs-vswitchd (ovs)",
        "pmd-c02/id:5",
    ):
        assert text in out, f"{text!r} missing from:\n{out}"
    # Each thread's scheduling, as chrt names it (the fixture's PMD thread runs at SCHED_FIFO 20).
    pmd = next(line for line in out.splitlines() if "pmd-c02/id:5" in line)
    assert "SCHED_FIFO 20" in pmd, out
    assert "SCHED_OTHER nice 0" in next(line for line in out.splitlines() if "CPU 1/KVM" in line)


def test_rendering_shows_a_virtio_user_frontends_lcores(runner: CliRunner, frontend_host: Path) -> None:  # noqa: F811
    res = runner.invoke(cli, ["discover", "--root", str(frontend_host)], env={"COLUMNS": "220"})
    assert res.exit_code == 0, res.output
    section = res.output.split("Back-end vhtune", 1)[1].split("Back-end ", 1)[0]
    assert "Front-end threads (pid 7000)" in section and "rte-worker-1" in section and "frontend" in section
    assert "eal-intr-thread" not in section  # only its data-path threads


def test_json_is_the_full_snapshot(runner: CliRunner, libvirt_host: Path) -> None:  # noqa: F811
    res = runner.invoke(cli, ["discover", "--json", "--root", str(libvirt_host)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert set(data) == {
        "taken_at",
        "hostname",
        "kernel",
        "cpus",
        "vms",
        "backends",
        "threads",
        "taps",
        "sockets",
        "eventfds",
        "problems",
    }
    assert data["vms"][0]["vcpu_tids"] == [1001, 1002]
    assert data["sockets"][0]["backend_pid"] == 2000
    assert data["vms"][0]["memory_kib_by_node"] == {"1": 4000}


def test_root_without_proc_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["discover", "--root", str(tmp_path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"vhtune: error: cannot list processes under {tmp_path}/proc: no such file or directory",
        "vhtune: hint: the root must contain proc/",
    ]
