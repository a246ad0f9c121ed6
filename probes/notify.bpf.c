/* notify family: read()/write() on known eventfds, keyed by (tgid, fd) → fd slot from user space (roles
 * come from discovery / the back-end's control socket). A vhost-user back-end writes the call eventfd
 * (→ irqfd → guest interrupt) and reads the kick eventfd; a user-space front-end writes kicks. Only the
 * syscall entry is traced: the fd number is all we need, and the count of eventfd_write() calls is exact. */

BPF_HASH(notify_fds, struct vht_fd_key, u32, VHT_MAX_FDS); /* (tgid, fd) → fd slot | VHT_FD_MAY_INJECT */
BPF_PERCPU_ARRAY(notify_stats, struct vht_notify_stats, VHT_MAX_FDS);
BPF_ARRAY(tgid_filter, u32, VHT_FILTER_SIZE); /* tgid & VHT_FILTER_MASK → watched fds behind it */
/* tid → the fd slot it just wrote: an irqfd injection on its fast path (MSI) runs inside that write. */
BPF_TABLE("lru_hash", u32, struct vht_pending, pending, VHT_MAX_FDS);

static __always_inline u32 *vht_fd_slot(u64 fd, u64 *pid_tgid)
{
    *pid_tgid = bpf_get_current_pid_tgid();
    u32 k = (*pid_tgid >> 32) & VHT_FILTER_MASK;
    u32 *n = tgid_filter.lookup(&k);
    if (!n || !*n)
        return 0;
    struct vht_fd_key key = {.tgid = *pid_tgid >> 32, .fd = (u32)fd};
    return notify_fds.lookup(&key);
}

TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
    u64 pid_tgid;
    u32 *slot = vht_fd_slot(args->fd, &pid_tgid);
    if (!slot)
        return 0;
    u32 v = *slot;
    u32 s = v & VHT_FD_SLOT_MASK;
    struct vht_notify_stats *st = notify_stats.lookup(&s);
    if (st)
        st->writes++;
    if (!(v & VHT_FD_MAY_INJECT))
        return 0;
    u32 tid = (u32)pid_tgid;
    struct vht_pending *cur = pending.lookup(&tid);
    if (cur && cur->slot == s)
        return 0; /* unchanged: a lookup is far cheaper than an LRU update */
    struct vht_pending p = {.slot = s};
    if (pending.update(&tid, &p) != 0)
        vht_lose(VHT_LOST_PENDING);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_read)
{
    u64 pid_tgid;
    u32 *slot = vht_fd_slot(args->fd, &pid_tgid);
    if (!slot)
        return 0;
    u32 s = *slot & VHT_FD_SLOT_MASK;
    struct vht_notify_stats *st = notify_stats.lookup(&s);
    if (st)
        st->reads++;
    return 0;
}
