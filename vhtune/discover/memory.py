"""NUMA placement of guest memory from /proc/PID/numa_maps.

Each numa_maps line is one mapping: start address, policy, then ``key=value`` tokens; ``N<node>=<pages>``
counts resident pages per node in units of ``kernelpagesize_kB``. Guest RAM is recognisable when QEMU maps it
from a memory backend (``file=/memfd:memory-backend-memfd``, a hugetlbfs file, ``huge``); plain ``-m`` RAM is
anonymous and cannot be told from QEMU's heap, so then every mapping counts (guest RAM dominates anyway).
"""

from __future__ import annotations

import re

_NODE = re.compile(r"^N(\d+)=(\d+)$")
_GUEST_MARKERS = ("memory-backend", "/dev/hugepages", "hugetlbfs", "/hugepages")

# Nodes holding less than this share of resident guest memory are not reported as backing it.
MIN_SHARE = 0.01


def guest_memory_by_node(numa_maps: str) -> dict[int, int]:
    """Resident KiB per NUMA node over the mappings that look like guest RAM (else over all mappings)."""
    guest: dict[int, int] = {}
    every: dict[int, int] = {}
    for line in numa_maps.splitlines():
        tokens = line.split()
        if len(tokens) < 2:
            continue
        page_kib = 4
        nodes: dict[int, int] = {}
        is_guest = False
        for tok in tokens[2:]:
            if m := _NODE.match(tok):
                nodes[int(m.group(1))] = int(m.group(2))
            elif tok.startswith("kernelpagesize_kB="):
                page_kib = int(tok.split("=", 1)[1])
            elif tok == "huge" or (tok.startswith("file=") and any(g in tok for g in _GUEST_MARKERS)):
                is_guest = True
        for node, pages in nodes.items():
            every[node] = every.get(node, 0) + pages * page_kib
            if is_guest:
                guest[node] = guest.get(node, 0) + pages * page_kib
    return dict(sorted((guest or every).items()))


def main_nodes(kib_by_node: dict[int, int]) -> list[int]:
    total = sum(kib_by_node.values())
    if total <= 0:
        return []
    return sorted(n for n, kib in kib_by_node.items() if kib >= MIN_SHARE * total)
