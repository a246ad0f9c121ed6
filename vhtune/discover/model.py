"""What discovery returns: plain dataclasses, stable field names (the recorder, the manifest and the
detectors read them). Every field that the host may not reveal (permissions, vanished process, other netns)
is optional; ``Snapshot.problems`` says why it is missing instead of raising."""

from __future__ import annotations

from dataclasses import dataclass, field

# Thread roles, as the probes and detectors use them.
ROLE_VCPU = "vcpu"  # QEMU "CPU n/KVM" or "CPU n/TCG"
ROLE_VHOST_WORKER = "vhost-worker"  # kernel thread "vhost-<qemu pid>" or vhost_task inside the QEMU process
ROLE_BACKEND = "backend-worker"  # vhost-user data-path thread: DPDK lcore, OVS pmd, vhtune-q<n>
# Data-path thread of a front-end that is not a VM (a DPDK virtio-user lcore, or every thread of a process
# connected to a back-end's socket whose threads carry no data-path name).
ROLE_FRONTEND = "frontend"
ROLE_VMM = "vmm"  # other QEMU threads (main loop, iothreads)
ROLE_OTHER = "other"


@dataclass(frozen=True)
class CpuInfo:
    cpu: int
    node: int  # NUMA node of this CPU (0 on single-node hosts)


# sched_setscheduler(2) policy numbers as /proc/PID/task/TID/stat field 41 shows them (include/uapi/linux/sched.h;
# 4 is unused; 7 is SCHED_EXT, a BPF scheduler, since 6.12), by the names chrt(1) and the thread-sched knob use.
SCHED_POLICY_NAMES = {0: "other", 1: "fifo", 2: "rr", 3: "batch", 5: "idle", 6: "deadline", 7: "ext"}
REALTIME_POLICIES = ("fifo", "rr", "deadline")


def tap_ref(netns: str, ifname: str) -> str:
    """How findings, tables and the recording's change log name a tap: ``ifname`` in the root netns (or an unknown
    one), ``NETNS/ifname`` elsewhere (as ``vhtune record --tap`` takes it): one netns per VM (Kata) gives several
    taps of one name."""
    return ifname if netns in ("root", "?", "") else f"{netns}/{ifname}"


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
    policy: str | None = None  # scheduling policy (SCHED_POLICY_NAMES), stat field 41
    rt_priority: int | None = None  # 1..99 for fifo/rr, 0 otherwise: stat field 40
    nice: int | None = None  # -20..19: stat field 19


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
    chardev_fd: int | None = None  # vhost-user: chardev fd= (socket passed in by libvirt)
    fds: tuple[int, ...] = ()  # tap: fd= / fds= (QEMU's own fd numbers, passed in by libvirt)
    vhostfds: tuple[int, ...] = ()  # tap: vhostfd= / vhostfds= (open /dev/vhost-net fds)


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
    memory_kib_by_node: dict[int, int] = field(default_factory=dict)  # resident guest memory per node (numa_maps)
    netns: str | None = None  # the QEMU process's network namespace (same labels as TapInfo.netns)
    vhost_tids: list[int] = field(default_factory=list)  # vhost-net workers serving this VM
    debug_threads: bool = False  # -name ...,debug-threads=on (without it vCPU threads are not named)


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
    frontend_pid: int | None = None  # the front-end side: vm_pid, or e.g. a DPDK virtio-user process
    netdev_id: str | None = None  # the VM's -netdev id using this socket
    qemu_server: bool = False  # QEMU listens (chardev server=on) and the back-end connects


@dataclass
class BackendInfo:
    pid: int
    kind: str  # "vhtune", "dpdk", "ovs", "vhost-net", "unknown"
    comm: str
    thread_tids: list[int] = field(default_factory=list)  # data-path threads (role backend-worker/vhost-worker)
    socket_paths: list[str] = field(default_factory=list)
    frontend_pids: list[int] = field(default_factory=list)  # VMs / front-ends it serves (threads: ROLE_FRONTEND)


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
