/* Optional variant for hosts with kprobes and vhost-net (not this one): counts the vhost worker's
 * notifications straight from vhost internals. Only the current tid and the opaque vq pointer argument are
 * used, never a struct field (header/kernel layout mismatch). Attached by name from user space, so the
 * functions carry no kprobe__ prefix (bcc would auto-attach those). */

BPF_HASH(vhost_events, struct vht_vhost_key, struct vht_vhost_val, VHT_HASH_ENTRIES);

static __always_inline void vht_vhost(u32 kind, u64 vq)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct vht_vhost_key key = {.tid = (u32)pid_tgid, .kind = kind, .vq = vq};
    struct vht_vhost_val *v = vhost_events.lookup(&key);
    if (!v) {
        struct vht_vhost_val init = {.tgid = pid_tgid >> 32};
        if (vhost_events.update(&key, &init) != 0)
            vht_lose(VHT_LOST_VHOST);
        v = vhost_events.lookup(&key);
    }
    if (v)
        __sync_fetch_and_add(&v->count, 1);
}

/* bool vhost_signal(struct vhost_dev *dev, struct vhost_virtqueue *vq) — renamed vhost_vq_signal later. */
int vht_kp_vhost_signal(struct pt_regs *ctx)
{
    vht_vhost(0, PT_REGS_PARM2(ctx));
    return 0;
}

int vht_kp_handle_tx_kick(struct pt_regs *ctx)
{
    vht_vhost(1, 0);
    return 0;
}

int vht_kp_handle_rx_kick(struct pt_regs *ctx)
{
    vht_vhost(2, 0);
    return 0;
}

int vht_kp_tun_sendmsg(struct pt_regs *ctx)
{
    vht_vhost(3, 0);
    return 0;
}

int vht_kp_tun_recvmsg(struct pt_regs *ctx)
{
    vht_vhost(4, 0);
    return 0;
}
