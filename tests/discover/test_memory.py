"""Guest-memory NUMA placement from numa_maps lines as the kernel prints them."""

from __future__ import annotations

from vhtune.discover.memory import parse_numa_maps

QEMU_BINARY = "5581d61d0000 default file=/usr/bin/qemu-system-x86_64 mapped=1031 N0=1031 kernelpagesize_kB=4\n"


def test_untouched_backend_falls_back_to_its_policy() -> None:
    # A paused guest: the memfd backend is mapped but has no resident page yet.
    mem = parse_numa_maps(QEMU_BINARY + "7f0bbbfff000 bind:1 file=/memfd:memory-backend-memfd\\040(deleted)\n")
    assert mem.backend_seen and mem.kib_by_node == {}
    assert mem.nodes() == [1]


def test_hugetlbfs_backend_counts_huge_pages_across_nodes() -> None:
    text = QEMU_BINARY + (
        "7f2000000000 interleave:0-1 file=/dev/hugepages/qemu_back_mem.pc.ram.x huge dirty=4 "
        "N0=3 N1=1 kernelpagesize_kB=2048\n"
    )
    mem = parse_numa_maps(text)
    assert mem.kib_by_node == {0: 6144, 1: 2048}
    assert mem.nodes() == [0, 1]
    assert sorted(mem.policy_nodes) == [0, 1]


def test_anonymous_guest_ram_counts_every_mapping_and_ignores_crumbs() -> None:
    text = "7f0000000000 default anon=100000 dirty=100000 N1=100000 kernelpagesize_kB=4\n" + QEMU_BINARY.replace(
        "N0=1031", "N0=10"
    )
    mem = parse_numa_maps(text)
    assert not mem.backend_seen
    assert mem.kib_by_node == {0: 40, 1: 400000}
    assert mem.nodes() == [1]  # node 0 holds < 1 %
