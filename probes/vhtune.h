/* Shared layout of every map value/key the vhtune probes fill; mirrored in vhtune/probes/layouts.py,
 * whose ctypes structs must have the same sizes (checked at load against the types bcc derives from here).
 *
 * Only tracepoint fields and BPF helpers are read: this host compiles against 6.1 headers while running
 * 6.18, so any kernel struct read through the headers would use wrong offsets. Tracepoint args come from
 * the running kernel's tracefs format files (bcc generates them), so they are safe.
 *
 * Counters in per-CPU arrays are cumulative; user space sums CPUs and diffs per interval. Counters in hash
 * maps are shared (atomic adds) and user space reads them with lookup-and-delete, i.e. read-and-clear. */
#ifndef VHTUNE_H
#define VHTUNE_H

#ifndef VHT_MAX_THREADS
#define VHT_MAX_THREADS 1024
#endif
#ifndef VHT_MAX_TAPS
#define VHT_MAX_TAPS 64
#endif
#ifndef VHT_MAX_FDS
#define VHT_MAX_FDS 1024
#endif
#ifndef VHT_MAX_CPUS
#define VHT_MAX_CPUS 256
#endif
#ifndef VHT_SKB_TRACK_BITS
#define VHT_SKB_TRACK_BITS 14 /* 2^14 in-flight skbs remembered for kfree_skb attribution */
#endif
#define VHT_SKB_TRACK (1u << VHT_SKB_TRACK_BITS)
#ifndef VHT_HASH_ENTRIES
#define VHT_HASH_ENTRIES 4096
#endif

/* Pre-filters in front of the target hash maps: array lookups (inlined by the verifier, no hashing) that
 * let the common case — an event of no interest — return early. Indexed by id & VHT_FILTER_MASK (tids,
 * tgids: a struct vht_id_ent that also answers the hit) or by the tracepoint's name length (taps: a count
 * of watched names of that length), written by user space. */
#define VHT_FILTER_SIZE 65536
#define VHT_FILTER_MASK (VHT_FILTER_SIZE - 1)
#define VHT_IFNAME_LEN_SLOTS 17 /* __data_loc length of a device name: 1..16 bytes with the NUL */

/* Direct-mapped fast paths in front of the hash maps. On this host a BPF hash lookup costs ~50 ns per event
 * (jhash plus bucket walk) while an array lookup is inlined by the verifier (~2 ns), so the hit path of the
 * hot probes (eventfd writes, tap packets) indexes arrays that user space fills; the hash maps stay the
 * complete truth and are consulted only where the arrays cannot answer (collisions, large fds). */
#define VHT_FD_ROWS 64     /* watched processes with a direct fd row */
#define VHT_FD_COLS 1024   /* fds 0..1023 of such a process are direct; larger fds go to notify_fds */
#define VHT_ID_NONE 0xfffffffeu /* tid/tgid_filter entry value: nobody watched behind it */
#define VHT_ID_HASH 0xffffffffu /* tid/tgid_filter entry value: several watched ids share it (or no fd row was
                                 * free): ask the hash map */
#define VHT_TAP_DIR_BITS 10 /* tap_dir has 2^10 entries for at most VHT_MAX_TAPS names */
#define VHT_TAP_DIR (1u << VHT_TAP_DIR_BITS)
#define VHT_DEV_CACHE_BITS 10 /* dev_cache: 2^10 net_device addresses (counters variant) */
#define VHT_DEV_CACHE (1u << VHT_DEV_CACHE_BITS)
#define VHT_TAP_VALID 1u    /* tap_dir entry holds one tap name */
#define VHT_TAP_SHARED 2u   /* two watched taps hash to this entry: look (name, inum) up in `taps` */
/* The tap_dir index: a multiplicative hash of the NUL-padded name read as two little-endian u64 words (the
 * name only: same-named taps of several netns share an entry, so they are told apart in `taps`);
 * vhtune/probes/layouts.py:tap_dir_index computes the same. */
#define VHT_TAP_K1 0x9E3779B97F4A7C15ULL
#define VHT_TAP_K2 0xFF51AFD7ED558CCDULL

/* log2 run-queue histogram: bucket b counts waits with floor(log2(ns)) == b. 2^40 ns ≈ 18 min. */
#define VHT_RUNQ_BUCKETS 40

#define VHT_DIR_RX 0 /* the tap device received it (netif_receive_skb): its user wrote a frame in */
#define VHT_DIR_TX 1 /* the stack transmitted it on the tap (net_dev_queue/xmit): toward its user */

#define VHT_IRQ_SET_IRQ 0 /* kvm:kvm_set_irq (gsi routed through irqchip / KVM_IRQ_LINE) */
#define VHT_IRQ_MSI 1     /* kvm:kvm_msi_set_irq (MSI: gsi field holds data & 0xff, the vector) */

#define VHT_NOSLOT 0xffffffffu

/* sched_switch prev_state: this kernel's print_fmt treats bits 0..7 (S D T t X Z P I) as sleep states and
 * 0x100 (TASK_REPORT_MAX) as "preempted"; a switch with none of the low bits set left the task runnable. */
#define VHT_SLEEP_STATE_MASK 0xff

enum vht_lost {
    VHT_LOST_COMPETITOR = 0, /* competitors map full */
    VHT_LOST_DROP = 1,       /* drops map full */
    VHT_LOST_IRQ = 2,        /* irq map full */
    VHT_LOST_WAKE = 3,       /* vcpu wake map full */
    VHT_LOST_SKB = 4,        /* in-flight skb evicted from the owner cache before it was freed */
    VHT_LOST_PENDING = 5,    /* unused since the last-eventfd entry became per-CPU (it cannot fail) */
    VHT_LOST_VHOST = 6,      /* vhost kprobe map full */
    VHT_LOST_SLOTS = 8,
};

struct vht_thread_stats { /* per-CPU array, indexed by thread slot; cumulative */
    u64 oncpu_ns;
    u64 runq_ns;
    u64 runq_count;
    u64 wakeups;
    u64 vol_switches;
    u64 invol_switches;
    u64 migrations;
};

struct vht_hist { /* per-CPU array, indexed by thread slot; cumulative */
    u64 b[VHT_RUNQ_BUCKETS];
};

struct vht_thread_ts { /* shared array, indexed by thread slot: where the thread is now */
    u64 oncpu_since; /* 0 = not on a CPU (as far as seen) */
    u64 wait_since;  /* 0 = not waiting on a run queue */
    s32 wait_cpu;    /* -1 = not counted in any cpu_wait.waiters */
    u32 pad;
};

struct vht_cpu_wait { /* shared array, indexed by CPU: targets runnable but not running there */
    s64 waiters;
    u64 wait_start; /* when waiters last went from 0 to 1 */
};

struct vht_comp_key {
    u32 tid;
    u32 cpu;
};

struct vht_comp_val { /* a task that held a CPU while a target waited on it */
    u64 ns;
    u64 slices;
    u32 tgid;
    u32 pad;
    char comm[16];
};

struct vht_ifname {
    char name[16]; /* IFNAMSIZ, NUL-padded: the key user space writes */
};

/* A watched tap: its name and the inode of its network namespace (struct net .ns.inum, the number in
 * /proc/PID/ns/net's "net:[N]"). One netns per VM (Kata Containers) gives several taps of one name; the
 * counters variant tells them apart by inum (read from the device on a dev_cache miss). The tracepoint
 * variant sees only the name: there user space writes inum 0 and watches one tap per name. */
struct vht_tap_key {
    char name[16];
    u32 inum;
    u32 pad;
};

struct vht_tap_ent { /* tap_dir entry: a watched tap (name as two NUL-padded words, netns inode), its slot */
    u64 n0;
    u64 n1;
    u32 slot;
    u32 flags; /* VHT_TAP_VALID, VHT_TAP_SHARED; 0 = empty */
    u32 inum;  /* netns inode; 0 in the tracepoint variant */
    u32 pad;
};

struct vht_tap_stats { /* per-CPU array, indexed by tap slot; cumulative */
    u64 rx_packets;
    u64 rx_bytes;
    u64 tx_packets; /* net_dev_xmit rc == 0: handed to the driver (tun drops after this count too) */
    u64 tx_bytes;
    u64 tx_errors; /* net_dev_xmit rc != 0 */
    u64 tx_queued; /* net_dev_queue: entered the device's queueing layer */
};

/* A direct-mapped cache entry (array index from the skb address): self-validating through `skb`, written
 * without locks or allocation (an LRU hash update costs ~0.15 µs per packet here). A newer skb landing in
 * the same entry evicts an older one still in flight; that is counted as VHT_LOST_SKB. */
/* dev_cache entry (counters variant): a net_device address seen at kfree_skb, its ifindex and watched-tap
 * slot (VHT_NOSLOT: not watched), valid while gen equals tap_gen. */
struct vht_dev_ent {
    u64 dev;
    u32 gen;
    s32 ifindex;
    u32 slot;
    u32 pad;
};

struct vht_skb_owner {
    u64 skb;
    u32 slot;
    u32 dir;
};

struct vht_drop_key {
    u32 slot;
    u32 dir;
    u32 reason; /* enum skb_drop_reason of the running kernel (names from the format file) */
    u32 pad;
};

/* notify_fds / fd_direct values: the fd slot, VHT_FD_VALID (so 0 means "not watched" in fd_direct), and
 * VHT_FD_MAY_INJECT when a write to it may inject an interrupt (call eventfds and eventfds of unknown role;
 * not kicks). */
#define VHT_FD_MAY_INJECT 0x80000000u
#define VHT_FD_VALID 0x40000000u
#define VHT_FD_SLOT_MASK 0x3fffffffu

struct vht_fd_key {
    u32 tgid;
    u32 fd;
};

struct vht_id_ent { /* tid_filter / tgid_filter entry, indexed by id & VHT_FILTER_MASK */
    u32 id;  /* the one watched tid (tgid) behind this entry; 0 when none or several (never a real match:
              * tid 0 is the idle task, guarded where it matters) */
    u32 val; /* its thread slot (fd_direct row), or VHT_ID_NONE / VHT_ID_HASH */
};

struct vht_notify_stats { /* per-CPU array, indexed by fd slot; cumulative */
    u64 writes;
    u64 reads;
    u64 injections; /* kvm irq/msi injections that ran inside a write to this fd */
};

/* Per CPU: the last watched eventfd that may be an irqfd, and the thread that wrote it. KVM injects an MSI
 * irqfd synchronously inside eventfd_write() (irqfd_wakeup → kvm_arch_set_irq_inatomic), in the writer's
 * context on the CPU its write syscall entered on, so a per-CPU entry checked against the current tid is
 * enough: no hash, no timestamp (a clock read costs ~60 ns here and tracing programs may not use the coarse
 * clock). A writer migrated between syscall entry and the injection, or an injection through an eventfd
 * that is not watched right after a watched write, is attributed wrongly or not at all; both are rare. */
struct vht_pending {
    u32 tid;
    u32 slot;
};

struct vht_irq_key {
    u32 tgid; /* context the injection ran in: the eventfd writer (irqfd fast path) or a kworker/VMM */
    u32 gsi;
    u32 slot; /* fd slot of the eventfd write that caused it, VHT_NOSLOT if none */
    u32 kind;
    u32 level;
    u32 pad;
};

struct vht_wake_val { /* kvm:kvm_vcpu_wakeup per vCPU thread */
    u64 wakeups;
    u64 polled; /* waited == 0: halt-polling saw the wake-up without sleeping */
    u64 waited;
    u64 invalid; /* valid == 0: woke without a pending event */
    u64 poll_ns;
    u64 wait_ns;
    u32 tgid;
    u32 pad;
};

struct vht_vhost_key { /* kprobe variant: vhost-net worker internals */
    u32 tid;
    u32 kind; /* 0 vhost_signal (call), 1 handle_tx_kick, 2 handle_rx_kick, 3 tun_sendmsg, 4 tun_recvmsg */
    u64 vq;   /* opaque virtqueue pointer (vhost_signal's 2nd arg) as a queue identity; 0 if unknown */
};

struct vht_vhost_val {
    u64 count;
    u32 tgid;
    u32 pad;
};

#endif
