"""NUMA placement of guest memory from /proc/PID/numa_maps.

Each numa_maps line is one mapping: start address, memory policy (``default``, ``bind:1``, ``prefer:0``,
``interleave:0-1``…), then ``key=value`` tokens; ``N<node>=<pages>`` counts resident pages per node in units
of ``kernelpagesize_kB``. Guest RAM is recognisable when QEMU maps it from a memory backend
(``file=/memfd:memory-backend-memfd``, a hugetlbfs file, ``huge``); plain ``-m`` RAM is anonymous and cannot
be told from QEMU's heap, so then every mapping counts (guest RAM dominates a running VM anyway).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vhtune.discover.procfs import parse_cpulist

_NODE = re.compile(r"^N(\d+)=(\d+)$")
_POLICY = re.compile(r"^(?:bind|prefer|preferred|interleave|weighted interleave)[^:]*:([\d,\-]+)$")
_GUEST_MARKERS = ("memory-backend", "/dev/hugepages", "hugetlbfs", "/hugepages")

# Nodes holding less than this share of resident guest memory are not reported as backing it.
MIN_SHARE = 0.01


@dataclass
class GuestMemory:
    kib_by_node: dict[int, int] = field(default_factory=dict)  # resident KiB per node
    policy_nodes: list[int] = field(default_factory=list)  # nodes named by the guest mappings' policy
    backend_seen: bool = False  # a mapping was recognisably guest RAM

    def nodes(self) -> list[int]:
        """Nodes holding resident guest memory; else the nodes its policy binds it to."""
        total = sum(self.kib_by_node.values())
        if total > 0:
            return sorted(n for n, kib in self.kib_by_node.items() if kib >= MIN_SHARE * total)
        return sorted(set(self.policy_nodes))


def parse_numa_maps(numa_maps: str) -> GuestMemory:
    guest = GuestMemory()
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
        if is_guest:
            guest.backend_seen = True
            if m := _POLICY.match(tokens[1]):
                guest.policy_nodes.extend(parse_cpulist(m.group(1)))
        for node, pages in nodes.items():
            every[node] = every.get(node, 0) + pages * page_kib
            if is_guest:
                guest.kib_by_node[node] = guest.kib_by_node.get(node, 0) + pages * page_kib
    if not guest.backend_seen:
        guest.kib_by_node = every
    guest.kib_by_node = dict(sorted(guest.kib_by_node.items()))
    return guest
