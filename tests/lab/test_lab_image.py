"""Guest image pieces: cpio writer, vmlinux extraction, module order, and the real Debian-built image."""

from __future__ import annotations

import lzma
import subprocess
from pathlib import Path

import pytest

from vhtune.errors import LabError, UsageError
from vhtune.lab import cpio, guestinit, image


def test_newc_archive_is_read_by_cpio(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "x").write_bytes(b"abc")
    (tree / "bin" / "y").symlink_to("x")
    (tree / "init").write_text("#!/bin/sh\n")
    out = tmp_path / "a.cpio.gz"
    cpio.write_newc(tree, out)
    listing = subprocess.run(
        f"zcat {out} | cpio -t -v --quiet", shell=True, capture_output=True, text=True, check=True
    ).stdout
    assert "bin/x" in listing and "bin/y -> x" in listing and "init" in listing
    # Deterministic: same tree, same bytes.
    out2 = tmp_path / "b.cpio.gz"
    cpio.write_newc(tree, out2)
    assert out.read_bytes() == out2.read_bytes()


def test_extract_vmlinux_finds_the_elf_after_a_false_magic() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 10
    blob = b"setup" + image.XZ_MAGIC + b"junk" + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"trailer"
    assert image.extract_vmlinux(blob) == elf
    with pytest.raises(LabError):
        image.extract_vmlinux(b"no kernel here")
    assert not image.has_pvh_entry(elf)  # an ELF header without notes


def test_module_order_puts_dependencies_first(tmp_path: Path) -> None:
    def ko(rel: str, deps: str) -> None:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\x00junk\x00license=GPL\x00depends=" + deps.encode() + b"\x00vermagic=6.1\x00")

    ko("a/virtio_net.ko", "virtio_ring,net_failover")
    ko("a/net_failover.ko", "failover")
    ko("b/failover.ko", "")
    ko("b/virtio_ring.ko", "")
    order = [p.stem for p in image.module_order(tmp_path, ("virtio_net",))]
    assert order.index("failover") < order.index("net_failover") < order.index("virtio_net")
    assert order.index("virtio_ring") < order.index("virtio_net")
    ko("c/loop1.ko", "loop2")
    ko("c/loop2.ko", "loop1")
    with pytest.raises(LabError, match="loop"):
        image.module_order(tmp_path, ("loop1",))
    with pytest.raises(LabError, match="not in the kernel package"):
        image.module_order(tmp_path, ("absent",))


def test_workload_cmdline_and_result_parsing() -> None:
    wl = guestinit.Workload("pktgen", duration=3, ip="10.9.0.2/24", peer="10.9.0.1", count=1000, size=64)
    line = wl.cmdline()
    assert "vhl.wl=pktgen" in line and "vhl.count=1000" in line and "vhl.peer=10.9.0.1" in line
    for bad in (
        guestinit.Workload("fly"),
        guestinit.Workload("ping"),
        guestinit.Workload("idle", ip="10.9.0.300/24"),
        guestinit.Workload("idle", duration=0),
    ):
        with pytest.raises(UsageError):
            bad.cmdline()
    con = 'boot\nVHTUNE-READY uptime=5.02 eth0=1\nVHTUNE-RESULT {"workload":"ping","rc":0,"sent":3}\n'
    assert guestinit.parse_result(con)["sent"] == 3
    assert guestinit.ready_uptime(con) == 5.02
    with pytest.raises(LabError, match="no result line"):
        guestinit.parse_result("kernel panic")
    with pytest.raises(LabError, match="not JSON"):
        guestinit.parse_result("VHTUNE-RESULT {oops")


@pytest.mark.slow
def test_real_image_from_debian_packages_is_cached(tmp_path: Path) -> None:
    img = image.ensure_image()  # shared cache: built once per package versions
    again = image.ensure_image()
    assert again.built is False and again.key == img.key
    assert img.kernel.read_bytes()[:4] == b"\x7fELF"
    assert image.has_pvh_entry(img.kernel.read_bytes())  # XEN_ELFNOTE_PHYS32_ENTRY: QEMU -kernel's way in
    listing = subprocess.run(
        f"zcat {img.initrd} | cpio -t --quiet", shell=True, capture_output=True, text=True, check=True
    ).stdout.split()
    for need in ("init", "bin/busybox", "usr/bin/iperf3", "lib64/ld-linux-x86-64.so.2", "modules.order"):
        assert need in listing
    assert any(p.endswith("virtio_net.ko") for p in listing) and any(p.endswith("pktgen.ko") for p in listing)
    assert any(k.startswith("linux-image-") for k in img.packages) and "busybox-static" in img.packages
