/* kvm family. kvm_set_irq (gsi, level, irq_source_id), kvm_msi_set_irq (address, data) and kvm_vcpu_wakeup
 * (ns, waited, valid) carry no VM id. An irqfd injection runs in the eventfd writer's context when KVM can
 * inject atomically (MSI routes), else in a kworker (irqchip GSIs) — so injections are keyed by the current
 * tgid, the gsi (or MSI vector), and the fd slot of a target eventfd the current thread wrote just before
 * (notify's per-CPU `pending` entry).
 * kvm_vcpu_wakeup runs in the vCPU thread, so its tid/tgid name the VM. */

BPF_HASH(irqs, struct vht_irq_key, u64, VHT_HASH_ENTRIES);
BPF_HASH(wakes, u32, struct vht_wake_val, VHT_HASH_ENTRIES);

static __always_inline void vht_irq(u32 gsi, u32 kind, u32 level)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    struct vht_irq_key key = {.tgid = pid_tgid >> 32, .gsi = gsi, .slot = VHT_NOSLOT, .kind = kind,
                              .level = level};
    u32 zero = 0;
    struct vht_pending *p = pending.lookup(&zero);
    if (p && p->tid == tid && level) {
        key.slot = p->slot;
        struct vht_notify_stats *st = notify_stats.lookup(&key.slot);
        if (st)
            st->injections++;
    }
    u64 *n = irqs.lookup(&key);
    if (!n) {
        u64 zero = 0;
        if (irqs.update(&key, &zero) != 0)
            vht_lose(VHT_LOST_IRQ);
        n = irqs.lookup(&key);
    }
    if (n)
        __sync_fetch_and_add(n, 1);
}

TRACEPOINT_PROBE(kvm, kvm_set_irq)
{
    vht_irq(args->gsi, VHT_IRQ_SET_IRQ, args->level != 0);
    return 0;
}

TRACEPOINT_PROBE(kvm, kvm_msi_set_irq)
{
    vht_irq((u32)(args->data & 0xff), VHT_IRQ_MSI, 1);
    return 0;
}

TRACEPOINT_PROBE(kvm, kvm_vcpu_wakeup)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    struct vht_wake_val *v = wakes.lookup(&tid);
    if (!v) {
        struct vht_wake_val init = {.tgid = pid_tgid >> 32};
        if (wakes.update(&tid, &init) != 0)
            vht_lose(VHT_LOST_WAKE);
        v = wakes.lookup(&tid);
    }
    if (!v)
        return 0;
    /* One thread runs on one CPU at a time: plain adds are race-free for this key. */
    v->wakeups++;
    if (args->waited) {
        v->waited++;
        v->wait_ns += args->ns;
    } else {
        v->polled++;
        v->poll_ns += args->ns;
    }
    if (!args->valid)
        v->invalid++;
    return 0;
}
