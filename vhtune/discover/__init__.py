"""Discovery: VMs, their vCPU and vhost threads, taps, vhost-user sockets, back-ends and NUMA placement.

``discover()`` takes one ``Snapshot`` (see ``vhtune.discover.model``) from /proc and /sys under a root path.
"""

from vhtune.discover.core import discover
from vhtune.discover.model import (
    ROLE_BACKEND,
    ROLE_FRONTEND,
    ROLE_OTHER,
    ROLE_VCPU,
    ROLE_VHOST_WORKER,
    ROLE_VMM,
    BackendInfo,
    CpuInfo,
    EventfdInfo,
    NetdevInfo,
    Snapshot,
    TapInfo,
    ThreadInfo,
    VhostUserSocketInfo,
    VMInfo,
)
from vhtune.discover.netns import HostNetns, NetnsAccess, NetnsRef, RecordedNetns

__all__ = [
    "ROLE_BACKEND",
    "ROLE_FRONTEND",
    "ROLE_OTHER",
    "ROLE_VCPU",
    "ROLE_VHOST_WORKER",
    "ROLE_VMM",
    "BackendInfo",
    "CpuInfo",
    "EventfdInfo",
    "HostNetns",
    "NetdevInfo",
    "NetnsAccess",
    "NetnsRef",
    "RecordedNetns",
    "Snapshot",
    "TapInfo",
    "ThreadInfo",
    "VMInfo",
    "VhostUserSocketInfo",
    "discover",
]
