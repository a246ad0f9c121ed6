/* Prologue of the one bcc module that holds every vhtune probe, so clang runs once per recording (~1.4 s
 * here). The loader (vhtune/probes/loader.py) appends the family files it selects — sched.bpf.c,
 * net.bpf.c, notify.bpf.c, kvm.bpf.c, optionally vhost_kprobe.bpf.c — as one text: bcc generates the
 * tracepoint argument structs only for TRACEPOINT_PROBEs in the main text, not in #included files.
 * notify.bpf.c must precede kvm.bpf.c (kvm reads notify's maps). */
#include <uapi/linux/ptrace.h>
#include "vhtune.h"

/* Map-pressure counters: events we saw but could not account (see enum vht_lost). */
BPF_PERCPU_ARRAY(lost, u64, VHT_LOST_SLOTS);

static __always_inline void vht_lose(u32 what)
{
    u64 *n = lost.lookup(&what);
    if (n)
        (*n)++;
}

