"""What discovery returns: plain dataclasses, stable field names (the recorder, the manifest and the
detectors read them). Every field that the host may not reveal (permissions, vanished process, other netns)
is optional; ``Snapshot.problems`` says why it is missing instead of raising."""

from __future__ import annotations

from dataclasses import dataclass, field

# Thread roles, as the probes and detectors use them.
ROLE_VCPU = "vcpu"  # QEMU "CPU n/KVM" or "CPU n/TCG"
ROLE_VHOST_WORKER = "vhost-worker"  # kernel thread "vhost-<qemu pid>" or vhost_task inside the QEMU process
ROLE_BACKEND = "backend-worker"  # vhost-user data-path thread: DPDK lcore, OVS pmd, vhtune-q<n>
ROLE_VMM = "vmm"  # other QEMU threads (main loop, iothreads)
ROLE_OTHER = "other"


@dataclass(frozen=True)
class CpuInfo:
    cpu: int
    node: int  # NUMA node of this CPU (0 on single-node hosts)


@dataclass
class ThreadInfo:
    pid: int  # thread-group id (the process)
    tid: int
    comm: str
    role: str
    affinity: tuple[int, ...] = ()  # CPUs allowed (Cpus_allowed_list)
    last_cpu: int | None = None  # field 39 of /proc/PID/task/TID/stat
    numa_node: int | None = None  # node of last_cpu
    vcpu_index: int | None = None  # n of "CPU n/KVM"
    queue: int | None = None  # vhtune-q<n> / DPDK lcore index where the name tells


@dataclass
class NetdevInfo:
    """One -netdev of a QEMU command line."""

    id: str
    kind: str  # "tap", "vhost-user", "user", "bridge", ...
    ifname: str | None = None  # tap: ifname=
    vhost: bool = False  # tap with vhost=on / vhostfd= (vhost-net kernel worker)
    queues: int = 1
    chardev: str | None = None  # vhost-user: chardev id
    socket_path: str | None = None  # vhost-user: chardev path=
    socket_server: bool = False  # chardev server=on (QEMU listens, the back-end connects)


@dataclass
class VMInfo:
    pid: int
    name: str | None = None
    uuid: str | None = None
    memory_mib: int | None = None
    accel: str | None = None  # "kvm" / "tcg"
    vcpu_tids: list[int] = field(default_factory=list)
    netdevs: list[NetdevInfo] = field(default_factory=list)
    memory_nodes: list[int] = field(default_factory=list)  # NUMA nodes backing guest memory, where visible


@dataclass
class TapInfo:
    name: str
    ifindex: int | None = None
    netns: str = "root"  # "root", the /run/netns name, or "net:[inode]"
    owner_pids: tuple[int, ...] = ()  # processes holding a /dev/net/tun fd attached to it (fdinfo "iff:")
    queues: int = 0  # tun fds attached (multiqueue taps have one per queue)
    txqueuelen: int | None = None
    vnet_hdr: bool | None = None
    multi_queue: bool | None = None
    stats: dict[str, int] = field(default_factory=dict)  # rx/tx packets, bytes, dropped (kernel counters)


@dataclass
class EventfdInfo:
    pid: int
    fd: int
    eventfd_id: int | None = None  # fdinfo "eventfd-id": equal ids in two processes = the same eventfd
    count: int | None = None  # fdinfo "eventfd-count"


@dataclass
class VhostUserSocketInfo:
    path: str
    listener_pid: int | None = None  # process with the listening socket bound to path
    peer_pids: tuple[int, ...] = ()  # processes holding a connected socket of this path
    vm_pid: int | None = None  # the QEMU (front-end) side
    backend_pid: int | None = None  # the back-end side
    connected: bool = False


@dataclass
class BackendInfo:
    pid: int
    kind: str  # "vhtune", "dpdk", "ovs", "vhost-net", "unknown"
    comm: str
    thread_tids: list[int] = field(default_factory=list)  # data-path threads (role backend-worker/vhost-worker)
    socket_paths: list[str] = field(default_factory=list)


@dataclass
class Snapshot:
    taken_at: float  # time.time()
    hostname: str
    kernel: str
    cpus: list[CpuInfo] = field(default_factory=list)
    vms: list[VMInfo] = field(default_factory=list)
    backends: list[BackendInfo] = field(default_factory=list)
    threads: list[ThreadInfo] = field(default_factory=list)
    taps: list[TapInfo] = field(default_factory=list)
    sockets: list[VhostUserSocketInfo] = field(default_factory=list)
    eventfds: list[EventfdInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one sentence each: what could not be seen and why
