"""The tables of a recording (``vhtune record``): one Parquet chunk series per table, these columns in this
order. Every row belongs to one interval, ``ts`` (its end, UTC) and ``interval_s`` (its length).

Counters are per interval (deltas), not cumulative. Sources: sched_* tracepoints (threads, runq_hist,
competitors), net/skb tracepoints (taps, tap_drops), sys_enter_write/read on eventfds (queues), kvm
tracepoints (irqs, vcpu_wakeups), vhost kprobes where a host allows them (vhost_events), map pressure (lost).
"""

from __future__ import annotations

from vhtune.schema import Column, TableSchema, register

TS = Column("ts", "datetime64[ns, UTC]", "end of the interval")
INTERVAL = Column("interval_s", "float64", "length of the interval", "s")
PID = Column("pid", "int64", "process (thread-group) id")
TID = Column("tid", "int64", "thread id")

THREADS = register(
    TableSchema(
        "threads",
        "per target thread and interval: CPU time, run-queue wait, switches (sched tracepoints)",
        (
            TS,
            INTERVAL,
            PID,
            TID,
            Column("comm", "string", "thread name at discovery"),
            Column("role", "string", "vcpu / vhost-worker / backend-worker / vmm / other"),
            Column("oncpu_ns", "int64", "time on a CPU (sched_switch in→out)", "ns"),
            Column("oncpu_pct", "float64", "oncpu_ns / interval, in percent of one CPU", "%"),
            Column("runq_ns", "int64", "time runnable but waiting (wakeup or preemption → switch-in)", "ns"),
            Column("runq_count", "int64", "run-queue waits that ended this interval"),
            Column("runq_p50_ns", "float64", "median wait, upper edge of its log2 bucket (NaN: none)", "ns"),
            Column("runq_p99_ns", "float64", "99th percentile wait, upper edge of its log2 bucket", "ns"),
            Column("wakeups", "int64", "sched_wakeup events"),
            Column("vol_switches", "int64", "switched out sleeping (voluntary)"),
            Column("invol_switches", "int64", "switched out still runnable (preempted)"),
            Column("migrations", "int64", "sched_migrate_task events"),
        ),
    )
)

RUNQ_HIST = register(
    TableSchema(
        "runq_hist",
        "log2 histogram of run-queue waits per target thread and interval (non-zero buckets only)",
        (
            TS,
            PID,
            TID,
            Column("bucket", "int64", "floor(log2(wait ns))"),
            Column("lo_ns", "int64", "2**bucket: lower edge", "ns"),
            Column("count", "int64", "waits in [lo_ns, 2*lo_ns)"),
        ),
    )
)

COMPETITORS = register(
    TableSchema(
        "competitors",
        "tasks that held a CPU while at least one target thread waited to run there",
        (
            TS,
            Column("cpu", "int64", "the CPU"),
            PID,
            TID,
            Column("comm", "string", "task name"),
            Column("ns", "int64", "time it ran there while a target waited", "ns"),
            Column("slices", "int64", "how many such run slices"),
        ),
    )
)

TAPS = register(
    TableSchema(
        "taps",
        "per target tap and interval (kernel's view: rx = its user wrote frames in, tx = sent to its user). "
        "Sources by the manifest's probes.variants.net: 'counters' = the tap's own counters (/proc/net/dev in its "
        "netns) and drops from a raw tracepoint on kfree_skb; 'tracepoints' = net tracepoints on every packet",
        (
            TS,
            INTERVAL,
            Column("ifname", "string", "tap name (the probes' key)"),
            Column("netns", "string", "network namespace at discovery"),
            Column("rx_packets", "int64", "frames its user wrote in (counters: rx packets; else netif_receive_skb)"),
            Column("rx_bytes", "int64", "bytes of those (tracepoints: without the 14-byte Ethernet header)", "B"),
            Column("tx_packets", "int64", "counters: frames its user read; tracepoints: net_dev_xmit rc=0"),
            Column("tx_bytes", "int64", "bytes of those", "B"),
            Column("tx_errors", "int64", "counters: tx errors; tracepoints: net_dev_xmit rc!=0"),
            Column("tx_queued", "int64", "frames handed to the tap (counters: tx_packets + tx_dropped; net_dev_queue)"),
            Column("drops", "int64", "kfree_skb of this tap's skbs (both directions)"),
            Column("rx_pps", "float64", "rx_packets / interval", "1/s"),
            Column("tx_pps", "float64", "tx_packets / interval", "1/s"),
        ),
    )
)

TAP_DROPS = register(
    TableSchema(
        "tap_drops",
        "kfree_skb of skbs last seen on a target tap, by direction and the running kernel's drop reason",
        (
            TS,
            Column(
                "netns",
                "string",
                "network namespace of the tap, as in taps.netns (schema 1.1; read from taps for older recordings)",
                fill="",
            ),
            Column("ifname", "string", "tap name"),
            Column("direction", "string", "rx / tx"),
            Column("reason", "int64", "enum skb_drop_reason value of the running kernel"),
            Column("reason_name", "string", "its name from the kfree_skb format file, e.g. FULL_RING"),
            Column("count", "int64", "drops"),
        ),
    )
)

QUEUES = register(
    TableSchema(
        "queues",
        "per watched eventfd (kick/call of a queue) and interval: write()/read() calls",
        (
            TS,
            INTERVAL,
            PID,
            Column("fd", "int64", "fd number in pid"),
            Column("role", "string", "kick / call / eventfd (role unknown)"),
            Column("queue", "int64", "virtqueue index, -1 if unknown"),
            Column("eventfd_id", "int64", "fdinfo eventfd-id, -1 if unknown"),
            Column("writes", "int64", "write() calls on it (a kick or call each)"),
            Column("reads", "int64", "read() calls on it (drains)"),
            Column("injections", "int64", "KVM irq/MSI injections run inside those writes (irqfd fast path)"),
        ),
    )
)

IRQS = register(
    TableSchema(
        "irqs",
        "KVM interrupt injections (kvm_set_irq, kvm_msi_set_irq) by the context they ran in",
        (
            TS,
            Column("pid", "int64", "tgid of the injecting context (eventfd writer, kworker or VMM)"),
            Column("kind", "string", "set_irq / msi"),
            Column("gsi", "int64", "GSI (set_irq) or MSI vector (msi: data & 0xff)"),
            Column("level", "int64", "1 assert, 0 de-assert"),
            Column("via_pid", "int64", "pid of the watched eventfd write that caused it, -1 if none"),
            Column("via_fd", "int64", "its fd, -1 if none"),
            Column("count", "int64", "injections"),
        ),
    )
)

VCPU_WAKEUPS = register(
    TableSchema(
        "vcpu_wakeups",
        "kvm_vcpu_wakeup per vCPU thread: halt-polling success (polled) vs sleeping (waited)",
        (
            TS,
            PID,
            TID,
            Column("wakeups", "int64", "halts that ended"),
            Column("polled", "int64", "ended during halt-polling (no sleep)"),
            Column("waited", "int64", "ended after sleeping"),
            Column("invalid", "int64", "woke without a pending event"),
            Column("poll_ns", "int64", "halt time of polled halts", "ns"),
            Column("wait_ns", "int64", "halt time of waited halts", "ns"),
        ),
    )
)

VHOST_EVENTS = register(
    TableSchema(
        "vhost_events",
        "vhost-net worker internals (kprobe variant only; empty where kprobes are unavailable)",
        (
            TS,
            PID,
            TID,
            Column("kind", "string", "vhost_signal / handle_tx_kick / handle_rx_kick / tun_sendmsg / tun_recvmsg"),
            Column("vq", "uint64", "virtqueue identity (kernel pointer; 0 if not known)"),
            Column("count", "int64", "calls"),
        ),
    )
)

LOST = register(
    TableSchema(
        "lost",
        "events seen but not accounted (BPF maps full) per interval; all zero in a healthy recording",
        (
            TS,
            Column("total", "int64", "sum of the columns below"),
            Column("competitor_map_full", "int64", ""),
            Column("drop_map_full", "int64", ""),
            Column("irq_map_full", "int64", ""),
            Column("wake_map_full", "int64", ""),
            Column("skb_owner_update", "int64", "in-flight tap skbs evicted from the drop-attribution cache"),
            Column("pending_update", "int64", "always 0: kept for old readers (the last-eventfd entry is per-CPU now)"),
            Column("vhost_map_full", "int64", ""),
        ),
    )
)

RECORDING_TABLES = (THREADS, RUNQ_HIST, COMPETITORS, TAPS, TAP_DROPS, QUEUES, IRQS, VCPU_WAKEUPS, VHOST_EVENTS, LOST)
