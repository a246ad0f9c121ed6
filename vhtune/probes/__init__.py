"""eBPF probes: loading (loader), struct mirrors (layouts), targets and map readers (maps)."""

from vhtune.probes.loader import ProbeConfig, Probes, load
from vhtune.probes.maps import Changes, Deltas, ProbeMaps
from vhtune.probes.targets import FdTarget, TapTarget, TargetSet, ThreadTarget

__all__ = [
    "Changes",
    "Deltas",
    "FdTarget",
    "ProbeConfig",
    "ProbeMaps",
    "Probes",
    "TapTarget",
    "TargetSet",
    "ThreadTarget",
    "load",
]
